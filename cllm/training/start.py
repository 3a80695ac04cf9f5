"""Where a run starts from: its directory (writable, no other run in it) and the checkpoint it
resumes (--resume) or fine-tunes from (--init-from), whose sizes the run takes."""

from __future__ import annotations

import os

from cllm.errors import CheckpointError, ConfigError
from cllm.training.config import MODEL_DEFAULTS, TrainConfig
from cllm.training.logbook import say


def open_run_directory(cfg: TrainConfig) -> None:
    """Rank 0: the checkpoint directory exists and is writable, holds no temporaries of a killed save,
    and (without --resume) no other run (cllm/checkpoint.py claim_run_directory)."""
    from cllm import checkpoint as ck

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


def resume_checkpoint(cfg: TrainConfig):
    """--resume's checkpoint; the run takes its sizes (a size flag that differs is refused)."""
    from cllm import checkpoint as ck

    path = os.path.join(cfg.checkpoint_dir, cfg.resume) if cfg.resume in ("latest", "best") else cfg.resume
    resume = ck.load_checkpoint(path, with_optimizer=True)
    saved = resume.model_config
    tuned = bool(resume.train_config.get("init_from"))  # fine-tuning trains on a T below the model's context
    run_T = resume.train_config.get("seq_len") if tuned else saved.max_seq_len
    for flag, value in cfg.model_flags().items():
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
    if tuned:
        cfg.init_from = resume.path  # its data is encoded with the checkpoint's tokenizer
    return resume


def init_checkpoint(cfg: TrainConfig):
    """--init-from's checkpoint; the run takes its sizes (a size flag that differs is refused) and a
    --seq-len up to its context."""
    from cllm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(cfg.init_from)
    saved = ckpt.model_config
    for flag in ("embed_dim", "num_layers", "num_heads"):
        value = getattr(cfg, flag)
        if value is not None and value != getattr(saved, flag):
            raise ConfigError(
                f"--init-from {cfg.init_from} has {flag.replace('_', '-')} {getattr(saved, flag)}, not "
                f"{value}; drop --{flag.replace('_', '-')}"
            )
    cfg.embed_dim, cfg.num_layers, cfg.num_heads = saved.embed_dim, saved.num_layers, saved.num_heads
    cfg.seq_len = cfg.seq_len or min(MODEL_DEFAULTS["seq_len"], saved.max_seq_len)
    return ckpt
