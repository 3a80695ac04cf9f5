"""Where a run starts from: its model sizes, its directory (writable, no other run in it) and the
checkpoint it resumes (--resume) or fine-tunes from (--init-from), whose sizes the run takes."""

from __future__ import annotations

import os

from cllm import checkpoint as ck
from cllm.config import ModelConfig, check_sizes
from cllm.errors import CheckpointError, ConfigError
from cllm.training.config import ARCH_FLAGS, MODEL_DEFAULTS, TrainConfig
from cllm.training.logbook import say


def settle_sizes(cfg: TrainConfig) -> dict:
    """Give the model sizes the user left out (None) ModelConfig's defaults, the one place they are
    applied; a new run's sizes are checked now, before any data is read. Returns the sizes as typed
    ({flag: value or None}): --resume and --init-from refuse a typed size their checkpoint does not
    have, and an image model's context is one image unless --seq-len was typed."""
    given = cfg.model_flags()
    for flag, default in MODEL_DEFAULTS.items():
        if given[flag] is None:
            setattr(cfg, flag, default)
    if not cfg.resume and not cfg.init_from:  # those take their checkpoint's sizes
        check_sizes(embed_dim=cfg.embed_dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                    max_seq_len=cfg.seq_len)
        # the architecture's own refusals (a vocabulary of 1 stands in for the data's, not yet read)
        ModelConfig(vocab_size=1, max_seq_len=cfg.seq_len, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                    embed_dim=cfg.embed_dim, **cfg.arch_flags())
    return given


def take_architecture(cfg: TrainConfig, saved: ModelConfig, refusal: str) -> None:
    """The run takes the checkpoint's architecture flags; one given with another value is refused
    (refusal: the message's start, e.g. "cannot resume: the checkpoint has")."""
    for flag in ARCH_FLAGS:
        value, have = getattr(cfg, flag), getattr(saved, flag)
        if value is not None and value != have and not (flag == "num_kv_heads" and value == 0):
            raise ConfigError(f"{refusal} {flag.replace('_', '-')} {have} but --{flag.replace('_', '-')} {value} "
                              "was given; drop the flag")
        setattr(cfg, flag, have)


def open_run_directory(cfg: TrainConfig) -> None:
    """Rank 0: the checkpoint directory exists and is writable, holds no temporaries of a killed save,
    and (without --resume) no other run (cllm/checkpoint.py claim_run_directory)."""
    ckdir = cfg.checkpoint_dir
    try:
        os.makedirs(ckdir, exist_ok=True)
        probe = os.path.join(ckdir, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.unlink(probe)
    except OSError as exc:
        raise CheckpointError(
            f"the checkpoint directory {ckdir!r} is not writable ({exc.strerror}); choose another --checkpoint-dir"
        ) from exc
    ck.remove_stale_temporaries(ckdir)
    if not cfg.resume:
        ck.claim_run_directory(ckdir, cfg.overwrite, say)


def resume_checkpoint(cfg: TrainConfig, given: dict):
    """--resume's checkpoint; the run takes its sizes (a size flag in `given`, settle_sizes' answer,
    that differs is refused)."""
    path = os.path.join(cfg.checkpoint_dir, cfg.resume) if cfg.resume in ("latest", "best") else cfg.resume
    resume = ck.load_checkpoint(path, with_optimizer=True)
    saved = resume.model_config
    tuned = bool(resume.train_config.get("init_from"))  # fine-tuning trains on a T below the model's context
    run_T = resume.train_config.get("seq_len") if tuned else saved.max_seq_len
    for flag, value in given.items():
        have = run_T if flag == "seq_len" else getattr(saved, flag)
        if value is not None and value != have:
            raise ConfigError(
                f"cannot resume: the checkpoint has {flag.replace('_', '-')} {have} but "
                f"--{flag.replace('_', '-')} {value} was given; drop the flag or start a new "
                "--checkpoint-dir"
            )
    cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.seq_len = (
        saved.embed_dim,
        saved.num_layers,
        saved.num_heads,
        run_T,
    )
    take_architecture(cfg, saved, "cannot resume: the checkpoint has")
    if tuned:
        cfg.init_from = resume.path  # its data is encoded with the checkpoint's tokenizer
    return resume


def init_checkpoint(cfg: TrainConfig, given: dict):
    """--init-from's checkpoint; the run takes its sizes (a size flag in `given`, settle_sizes' answer,
    that differs is refused) and a --seq-len up to its context."""
    ckpt = ck.load_checkpoint(cfg.init_from)
    saved = ckpt.model_config
    for flag in ("embed_dim", "num_layers", "num_heads"):
        value = given[flag]
        if value is not None and value != getattr(saved, flag):
            raise ConfigError(
                f"--init-from {cfg.init_from} has {flag.replace('_', '-')} {getattr(saved, flag)}, not "
                f"{value}; drop --{flag.replace('_', '-')}"
            )
    cfg.embed_dim, cfg.num_layers, cfg.num_heads = saved.embed_dim, saved.num_layers, saved.num_heads
    take_architecture(cfg, saved, f"--init-from {cfg.init_from} has")
    if given["seq_len"] is None:  # the default context, or the checkpoint's when shorter
        cfg.seq_len = min(cfg.seq_len, saved.max_seq_len)
    return ckpt
