"""The data pipeline's exception types; all are DataError, so the CLI prints one line for them."""
from cllm.errors import DataError


class CorpusNotFoundError(DataError):
    """The corpus path does not exist or cannot be read."""


class EmptyCorpusError(DataError):
    """No text: no readable text files, or nothing left after cleaning."""


class TextDecodeError(DataError):
    """A file that is not valid UTF-8 and whose encoding could not be detected."""


class TokenFileError(DataError):
    """A missing, truncated or foreign token dataset (.bin) file."""
