"""Exceptions for errors a user can cause.

The CLI turns any CLLMError into one line on stderr and a non-zero exit, never a traceback.
Each subsystem raises the most specific subclass so that API users can catch what they expect.
"""


class CLLMError(Exception):
    """Base class: a problem with the user's input, files, flags or environment."""

    exit_code = 2


class ConfigError(CLLMError):
    """An impossible or invalid model/training configuration."""


class CheckpointError(CLLMError):
    """A missing, truncated, corrupt or incompatible checkpoint or model file."""


class DataError(CLLMError):
    """A missing, unreadable or empty corpus, or a bad token dataset file."""


class TokenizerError(CLLMError):
    """A bad tokenizer file or impossible tokenizer settings."""


class CrawlError(CLLMError):
    """A crawl that cannot start (bad URL, unreachable site, unwritable output)."""


class TrainingError(CLLMError):
    """Training cannot continue (non-finite loss or gradients, dataset too small)."""


class MissingDependencyError(CLLMError):
    """An optional extra is needed; the message says how to install it."""
