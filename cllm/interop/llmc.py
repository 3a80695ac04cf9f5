"""llm.c interoperability: its fp32 model file, so that a model trained here runs in llm.c's C
trainer (`train_gpt2.c`) and a GPT-2 model file written by llm.c loads here. Its token file, so that
a dataset prepared here (`cli.py prepare --llmc`) trains there, is written by cllm/data/tokenfile.py
beside CLLM's own (the data layer writes it; this module needs none of it).

The model file (llm.c `gpt2_build_from_checkpoint`), little-endian:

    header   256 x int32: [0] magic 20240326, [1] version, [2] maxT, [3] V, [4] L, [5] NH, [6] C,
             [7] Vp (version 3; version 1 files have no padding, Vp = V); the rest zero
    params   float32, every tensor of docs/design.md's order back to back:
             wte (Vp,C) wpe (maxT,C) ln1w (L,C) ln1b (L,C) qkvw (L,3C,C) qkvb (L,3C) attprojw (L,C,C)
             attprojb (L,C) ln2w (L,C) ln2b (L,C) fcw (L,4C,C) fcb (L,4C) fcprojw (L,C,4C) fcprojb (L,C)
             lnfw (C) lnfb (C)

That order is ModelConfig.param_shapes(), the layout of Model.params, so the parameters are
written and read as one flat block. llm.c's bf16 files (version 5) are not read: export fp32 there.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from cllm import checkpoint as ck
from cllm.config import ModelConfig
from cllm.errors import CheckpointError, ConfigError
from cllm.fileio import atomic_open
from cllm.tokenizers import load_tokenizer

MAGIC = 20240326
VERSION = 3  # fp32, padded vocabulary (Vp in header[7])
UNPADDED_VERSION = 1  # fp32, no padding: Vp = V
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


@dataclasses.dataclass
class LlmcModel:
    """What an llm.c model file holds: the model's sizes and its parameters, flat, in file order."""
    config: ModelConfig
    params: np.ndarray  # (P,) float32
    version: int = VERSION

    def named_tensors(self) -> dict[str, np.ndarray]:
        """name -> tensor of its real shape (views into params), in the file's order."""
        out, offset = {}, 0
        for name, shape in self.config.param_shapes().items():
            n = int(np.prod(shape))
            out[name] = self.params[offset:offset + n].reshape(shape)
            offset += n
        return out


def header_for(config: ModelConfig) -> np.ndarray:
    """The 256 int32 of a version-3 header for `config`."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:8] = [MAGIC, VERSION, config.max_seq_len, config.vocab_size, config.num_layers, config.num_heads,
                  config.embed_dim, config.padded_vocab_size]
    return header


def flat_params(config: ModelConfig, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The tensors (name -> array of its shape) as one float32 block in the file's order."""
    shapes = config.param_shapes()
    parts = []
    for name, shape in shapes.items():
        t = np.asarray(tensors[name])
        if t.size != int(np.prod(shape)):
            raise CheckpointError(f"tensor {name} has shape {t.shape}; the model needs {shape}")
        parts.append(np.ascontiguousarray(t, dtype="<f4").reshape(-1))
    return np.concatenate(parts)


def write_model_file(path: str, config: ModelConfig, params: np.ndarray) -> int:
    """Write llm.c's fp32 model file atomically; returns its size in bytes."""
    params = np.ascontiguousarray(params, dtype="<f4").reshape(-1)
    if params.size != config.num_parameters():
        raise CheckpointError(f"{params.size} parameters given; the model needs {config.num_parameters()}")
    path = os.fspath(path)
    try:
        with atomic_open(path, "wb") as f:
            f.write(header_for(config).tobytes())
            step = 1 << 24  # write in pieces: no second copy of a large model in memory
            for i in range(0, params.size, step):
                f.write(params[i:i + step].tobytes())
    except OSError as exc:
        raise CheckpointError(f"cannot write {path!r}: {exc.strerror or exc}; choose another output path") from exc
    return HEADER_BYTES + 4 * params.size


def read_model_file(path: str) -> LlmcModel:
    """Read and validate llm.c's fp32 model file; any problem is a CheckpointError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no llm.c model file at {path!r}")
    size = os.path.getsize(path)
    hint = "not an llm.c fp32 model file (write one with llm.c's train_gpt2.py or cli.py export-llmc)"
    if size < HEADER_BYTES:
        raise CheckpointError(f"{path} is {size} bytes, shorter than llm.c's {HEADER_BYTES}-byte header: {hint}")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != MAGIC:
        raise CheckpointError(f"{path} has magic number {int(header[0])}, not {MAGIC}: {hint}")
    version = int(header[1])
    if version not in (VERSION, UNPADDED_VERSION):
        what = " (bf16 weights)" if version == 5 else ""
        raise CheckpointError(f"{path} is llm.c model file version {version}{what}; this CLLM reads fp32 "
                              f"versions {VERSION} and {UNPADDED_VERSION}")
    maxT, V, L, NH, C = (int(x) for x in header[2:7])
    Vp = int(header[7]) if version == VERSION else V
    sizes = {"maxT": maxT, "V": V, "L": L, "NH": NH, "C": C, "Vp": Vp}
    bad = [f"{k}={v}" for k, v in sizes.items() if v <= 0]
    if bad:
        raise CheckpointError(f"{path} has impossible sizes in its header ({', '.join(bad)}): the file is corrupt")
    try:
        config = ModelConfig(vocab_size=V, max_seq_len=maxT, num_layers=L, num_heads=NH, embed_dim=C,
                             padded_vocab_size=Vp)
    except ConfigError as exc:
        raise CheckpointError(f"{path} has an impossible model in its header: {exc}") from exc
    P = config.num_parameters()
    expected = HEADER_BYTES + 4 * P
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise CheckpointError(f"{path} is {size:,} bytes but its header (maxT {maxT}, V {V}, L {L}, NH {NH}, C {C}, "
                              f"Vp {Vp}) needs {expected:,}: the file is {state}")
    config.check_memory(training=False)
    params = np.fromfile(path, dtype="<f4", count=P, offset=HEADER_BYTES).astype(np.float32, copy=False)
    if not np.isfinite(params).all():
        raise CheckpointError(f"{path} holds non-finite parameters (NaN or Inf): the model is broken")
    return LlmcModel(config=config, params=params, version=version)


def export_checkpoint(checkpoint: str, out_path: str) -> tuple[str, ModelConfig]:
    """Write the checkpoint's model as llm.c's fp32 model file; returns (checkpoint path, config)."""
    ckpt = ck.load_checkpoint(checkpoint)
    if ckpt.model_config.arch != "gpt2":
        raise CheckpointError(f"{ckpt.path} is a {ckpt.model_config.arch} model; llm.c's model file holds GPT-2's "
                              "layout only, so export-llmc takes gpt2 checkpoints")
    write_model_file(out_path, ckpt.model_config, flat_params(ckpt.model_config, ckpt.params))
    return ckpt.path, ckpt.model_config


def import_model_file(model_path: str, checkpoint_dir: str, tokenizer_path: str | None = None) -> str:
    """Read llm.c's model file into a new checkpoint CHECKPOINT_DIR/step_000000 (with `latest`
    pointing to it, and the tokenizer when given); returns the step directory."""
    model = read_model_file(model_path)
    tokenizer = None
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(os.fspath(tokenizer_path))
        if tokenizer.vocab_size != model.config.vocab_size:
            raise CheckpointError(f"the tokenizer {tokenizer_path} has {tokenizer.vocab_size:,} tokens but the model "
                                  f"file's vocabulary is {model.config.vocab_size:,}")
    checkpoint_dir = os.fspath(checkpoint_dir)
    held = ck.describe_run(checkpoint_dir)
    if held:
        raise CheckpointError(f"{checkpoint_dir!r} already holds {held}; import into a new directory")
    if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"{checkpoint_dir!r} is a file, not a directory; choose another checkpoint directory")
    state = {"step": 0, "imported_from": os.path.abspath(model_path), "llmc_version": model.version}
    name = "step_000000"
    try:
        path = ck.save_checkpoint(checkpoint_dir, name, model, tokenizer=tokenizer,
                                  train_config={"imported_from": os.path.abspath(model_path)}, state=state)
        ck.set_pointer(checkpoint_dir, "latest", name)
    except OSError as exc:
        raise CheckpointError(f"cannot write the checkpoint to {checkpoint_dir!r}: {exc.strerror or exc}; "
                              "choose another directory") from exc
    return path
