"""Checkpoints: one directory per saved step, written atomically, validated on load.

    CHECKPOINT_DIR/
      step_000500/           model.safetensors   named parameter tensors (no pickle)
                             optimizer.safetensors  AdamW m and v, flat; Muon's momentum
                                                    (muon_momentum) too; its metadata names the optimizer
                             config.json         format version, model config, training config
                             state.json          step, data RNG state, best val loss, elapsed time
                             tokenizer.json      the tokenizer, when there is one
      latest -> step_000500  symbolic links, replaced atomically
      best   -> step_000250
A step directory is first written as a hidden temporary directory, every file fsynced, and then
renamed into place; the `latest` link is switched only after that. A kill at any moment leaves
`latest` pointing at a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from cllm.config import ModelConfig
from cllm.errors import CheckpointError, ConfigError
from cllm.fileio import default_mode, fsync_path

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class Checkpoint:
    path: str
    model_config: ModelConfig
    params: dict[str, np.ndarray]  # name -> tensor of its real shape
    train_config: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    m: np.ndarray | None = None  # AdamW moments (P), flat, None if the file has none
    v: np.ndarray | None = None
    optimizer: str = "adamw"  # the optimizer that wrote optimizer.safetensors (cllm/optim.py's names)
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)  # its tensors besides m and v
    tokenizer_path: str | None = None


def save_checkpoint(
    directory: str,
    name: str,
    model,
    optimizer=None,
    tokenizer=None,
    train_config: dict | None = None,
    state: dict | None = None,
    training_tensors: dict | None = None,
) -> str:
    """Write directory/name/ atomically and return its path. training_tensors: further tensors that a resume
    needs, kept in optimizer.safetensors beside the optimizer's (--ema-decay's online weights)."""
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        os.chmod(tmp, default_mode(directory=True))
    except OSError as exc:
        raise CheckpointError(
            f"cannot write checkpoints to {directory!r}: {exc.strerror}; choose another --checkpoint-dir"
        ) from exc
    final = old = None
    try:
        tensors = {k: np.ascontiguousarray(t, dtype=np.float32) for k, t in model.named_tensors().items()}
        save_file(tensors, os.path.join(tmp, MODEL_FILE), metadata={"format": "cllm", "version": str(FORMAT_VERSION)})
        if optimizer is not None:
            m, v = model.moments_to_host()
            moments = {"m": m, "v": v, **optimizer.state_tensors(model), **(training_tensors or {})}
            save_file({k: t.astype(np.float32, copy=False) for k, t in moments.items()},
                      os.path.join(tmp, OPTIMIZER_FILE), metadata={"optimizer": optimizer.name})
        config = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(), "train": train_config or {}}
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(state or {}, f, indent=2)
        if tokenizer is not None:
            tokenizer.save(os.path.join(tmp, TOKENIZER_FILE))
        for fname in os.listdir(tmp):
            os.chmod(os.path.join(tmp, fname), default_mode())  # safetensors writes 0600
            fsync_path(os.path.join(tmp, fname))
        fsync_path(tmp)
        final = os.path.join(directory, name)
        if os.path.isdir(final):  # re-saving a step (a resume from an older checkpoint of this run):
            # the old one is renamed away first, so that `latest` never points at a half-deleted directory
            old = os.path.join(directory, f".{name}.{os.getpid()}.old.tmp")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_path(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        if old is not None and os.path.isdir(old) and not os.path.exists(final):
            os.replace(old, final)  # put the previous checkpoint back
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def set_pointer(directory: str, pointer: str, target_name: str) -> None:
    """Atomically make directory/pointer a symbolic link to target_name (relative)."""
    tmp = os.path.join(directory, f".{pointer}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target_name, tmp)
    os.replace(tmp, os.path.join(directory, pointer))
    fsync_path(directory)


def remove_stale_temporaries(directory: str) -> None:
    """Delete temporary directories left by a process killed mid-save."""
    if not os.path.isdir(directory):
        return
    for fname in os.listdir(directory):
        if fname.startswith(".") and fname.endswith(".tmp"):
            path = os.path.join(directory, fname)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def prune_checkpoints(directory: str, keep_last: int) -> None:
    """Keep the newest keep_last step directories, and whatever latest/best point to."""
    steps = sorted(
        (d for d in os.listdir(directory) if d.startswith("step_") and os.path.isdir(os.path.join(directory, d))),
        key=lambda d: (len(d), d),
    )  # step_1000000 comes after step_999999
    protected = set()
    for pointer in ("latest", "best"):
        link = os.path.join(directory, pointer)
        if os.path.islink(link):
            protected.add(os.path.basename(os.readlink(link)))
    for d in steps[:-keep_last] if keep_last > 0 else []:
        if d not in protected:
            shutil.rmtree(os.path.join(directory, d), ignore_errors=True)


RUN_FILES = ("latest", "best", "metrics.jsonl", "loss.png", "dataset")  # besides step_* directories


def run_entries(directory: str) -> list[str]:
    """The names in `directory` that belong to a training run: step_* directories, the latest and best
    links, metrics.jsonl, loss.png, the prepared dataset, and temporaries of interrupted saves."""
    if not os.path.isdir(directory):
        return []
    return sorted(
        n
        for n in os.listdir(directory)
        if n in RUN_FILES or n.startswith("step_") or (n.startswith(".") and n.endswith(".tmp"))
    )


def describe_run(directory: str) -> str | None:
    """What run `directory` holds ("a run at step 600, validation loss 2.2081"), None if it holds none."""
    entries = [n for n in run_entries(directory) if n not in ("dataset", "loss.png") and not n.startswith(".")]
    if not entries:
        return None
    try:
        with open(os.path.join(resolve_checkpoint(directory), STATE_FILE)) as f:
            state = json.load(f)
        step, val = state.get("step"), state.get("best_val_loss")
        return f"a run at step {step}" + (f", best validation loss {val:.4f}" if isinstance(val, float) else "")
    except (CheckpointError, OSError, ValueError, AttributeError):
        return f"an unfinished run ({', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''})"


def remove_run(directory: str) -> None:
    """Delete everything run_entries names (and only that: other files in `directory` stay)."""
    for name in run_entries(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    fsync_path(directory)


def claim_run_directory(ckdir: str, overwrite: bool, say) -> None:
    """A new run never mixes with an old one: refuse a directory that holds a run, or with
    --overwrite delete that run first (only its own files: checkpoints, links, metrics, plot, dataset)."""
    held = describe_run(ckdir)
    if held is None:
        return
    if not overwrite:
        raise CheckpointError(
            f"{ckdir} already holds {held}; continue it with --resume latest, start a new run "
            f"with another --checkpoint-dir, or replace it with --overwrite"
        )
    say(f"--overwrite: deleting {held} in {ckdir}")
    remove_run(ckdir)


def resolve_checkpoint(path: str) -> str:
    """A checkpoint step directory from: a step directory, a latest/best link, or a checkpoint
    directory holding a `latest` link (then the latest checkpoint in it is used)."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path!r}; train one first (python cli.py train) or pass --checkpoint")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, CONFIG_FILE)):
        latest = os.path.join(path, "latest")
        if os.path.exists(latest):
            return os.path.realpath(latest)
        subdirs = sorted(
            (d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d, "latest"))),
            key=lambda d: os.path.getmtime(os.path.join(path, d, "latest")),
        )
        if subdirs:  # e.g. checkpoints/ holding several runs: the most recently updated one
            return os.path.realpath(os.path.join(path, subdirs[-1], "latest"))
        raise CheckpointError(f"{path!r} is a directory without a checkpoint (no {CONFIG_FILE} and no 'latest' link)")
    return os.path.realpath(path)


def read_config(path: str) -> dict:
    """The validated config.json of the checkpoint directory `path`."""
    config_path = os.path.join(path, CONFIG_FILE)
    try:
        with open(config_path) as f:
            config = json.load(f)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path!r} is not a checkpoint: {CONFIG_FILE} is missing") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path} is unreadable or not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or "format_version" not in config or "model" not in config:
        raise CheckpointError(f"{config_path} is not a CLLM checkpoint config")
    if config["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format version {config['format_version']!r}; this CLLM reads version {FORMAT_VERSION}"
        )
    return config


def load_checkpoint(path: str, with_optimizer: bool = False) -> Checkpoint:
    """Read and validate a checkpoint; any problem is a CheckpointError naming the file."""
    path = resolve_checkpoint(path)
    config = read_config(path)
    config_path = os.path.join(path, CONFIG_FILE)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{config_path} holds an invalid model config: {exc}") from exc

    def read(fname):
        file = os.path.join(path, fname)
        if not os.path.exists(file):
            raise CheckpointError(f"checkpoint {path!r} is missing {fname}")
        try:
            return load_file(file)
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file} is corrupt or truncated ({exc})") from exc

    tensors = read(MODEL_FILE)
    expected = model_config.param_shapes()
    if set(tensors) != set(expected):
        raise CheckpointError(
            f"{os.path.join(path, MODEL_FILE)} has tensors {sorted(tensors)}, expected {sorted(expected)}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape or tensors[name].dtype != np.float32:
            raise CheckpointError(
                f"tensor {name} in {MODEL_FILE} has shape {tensors[name].shape} "
                f"({tensors[name].dtype}); the config says {shape} (float32)"
            )
    ckpt = Checkpoint(path=path, model_config=model_config, params=tensors, train_config=config.get("train", {}))
    state_path = os.path.join(path, STATE_FILE)
    if os.path.exists(state_path):
        try:
            with open(state_path) as f:
                ckpt.state = json.load(f)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{state_path} is unreadable or not valid JSON ({exc})") from exc
    if with_optimizer:
        opt = read(OPTIMIZER_FILE)
        P = model_config.num_parameters()
        for key in ("m", "v"):
            if key not in opt or opt[key].shape != (P,):
                raise CheckpointError(f"{OPTIMIZER_FILE} in {path!r} does not match the model ({P} parameters)")
        ckpt.m, ckpt.v = opt.pop("m"), opt.pop("v")
        ckpt.optimizer_state = opt
        ckpt.optimizer = read_metadata(os.path.join(path, OPTIMIZER_FILE)).get("optimizer", "adamw")
    tok = os.path.join(path, TOKENIZER_FILE)
    ckpt.tokenizer_path = tok if os.path.exists(tok) else None
    return ckpt


def read_metadata(file: str) -> dict:
    """The metadata of a safetensors file ({} without any); the file was read once already."""
    try:
        with safe_open(file, framework="numpy") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file} is corrupt or truncated ({exc})") from exc


def model_from_checkpoint(ckpt: Checkpoint):
    """A Model holding the checkpoint's weights (and AdamW moments when loaded)."""
    # costly: Numba and the kernels (~0.45 s); export-hf, export-gguf and export-llmc read checkpoints without them
    from cllm.model import Model  # noqa: PLC0415

    model = Model(ckpt.model_config, seed=None)
    for name, tensor in ckpt.params.items():
        model.p[name][:] = tensor.reshape(-1)
    if ckpt.m is not None:
        model.m[:] = ckpt.m
        model.v[:] = ckpt.v
    return model
