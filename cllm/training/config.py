"""TrainConfig: every flag of `cli.py train`, each field with its default and its --help line
(cllm/commands/__init__.py derives the command line from it), and build_config for a resumed run."""

from __future__ import annotations

import dataclasses
import os

from cllm import checkpoint as ck
from cllm.config import ModelConfig, option
from cllm.data.prepare import PrepareOptions
from cllm.errors import ConfigError
from cllm.schedule import BUDGET_POINTS, CHECKPOINT_INTERVAL, EPOCHS, EVAL_INTERVAL

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")


def prepare_field(name: str, help: str | None = None):
    """A TrainConfig field that is PrepareOptions' field `name` (cllm/data/prepare.py): its default and help
    (or this help, where train's meaning is narrower), so that the default is written once, there."""
    field = PrepareOptions.__dataclass_fields__[name]
    return dataclasses.field(default=field.default,
                             metadata={**field.metadata, **({"help": help} if help else {}), "from": PrepareOptions})

# The model sizes a new run gets (ModelConfig's defaults); TrainConfig keeps None for "not given" so
# that a resumed run can tell a flag the user typed (which must match the checkpoint) from a default.
# cllm/training/start.py settle_sizes applies them, once.
MODEL_DEFAULTS = {"embed_dim": ModelConfig.embed_dim, "num_layers": ModelConfig.num_layers,
                  "num_heads": ModelConfig.num_heads, "seq_len": ModelConfig.max_seq_len}
# The architecture flags, ModelConfig's fields of the same names; None ("not given") leaves ModelConfig's
# default (a new run) or the checkpoint's value (--resume, --init-from: a different typed one is refused)
ARCH_FLAGS = ("arch", "num_kv_heads", "ffn_dim", "rope_theta", "norm_eps", "tie_embeddings", "attention_bias",
              "activation", "qk_norm", "logit_softcap", "zero_init_proj")


@dataclasses.dataclass
class TrainConfig:
    """Every flag of `cli.py train`: each field is a flag of the same name (dashes for underscores)
    with this default and this help line (cllm/commands/__init__.py derives the command line)."""

    data: str = option(DEFAULT_DATA, "a text file, a directory, a prepared dataset or a crawl's output")
    tokenizer: str = prepare_field("tokenizer")
    vocab_size: int | None = prepare_field("vocab_size")
    chat_tokens: bool = prepare_field("chat_tokens")
    embed_dim: int | None = option(None, "C, the model's width", shown=MODEL_DEFAULTS["embed_dim"])
    num_layers: int | None = option(None, "L, transformer blocks", shown=MODEL_DEFAULTS["num_layers"])
    num_heads: int | None = option(
        None, "NH, attention heads (must divide --embed-dim)", shown=MODEL_DEFAULTS["num_heads"]
    )
    seq_len: int | None = option(
        None, "T, tokens per training sequence; also the model's context length", shown=MODEL_DEFAULTS["seq_len"]
    )
    arch: str | None = option(None, "the architecture: gpt2 or llama (RoPE, RMSNorm, SwiGLU, grouped-query "
                                    "attention, no biases)", shown=ModelConfig.arch)
    num_kv_heads: int | None = option(None, "llama: key/value heads (must divide --num-heads; fewer: a smaller "
                                            "KV cache)", shown="--num-heads")
    ffn_dim: int | None = option(None, "llama: hidden units of the SwiGLU MLP", shown="8C/3 rounded up to 64")
    rope_theta: float | None = option(None, "llama: the base of the rotary embeddings' frequencies",
                                      shown=ModelConfig.rope_theta)
    norm_eps: float | None = option(None, "epsilon of the LayerNorms (gpt2) or RMSNorms (llama)",
                                    shown=ModelConfig.norm_eps)
    tie_embeddings: bool | None = option(None, "llama: the LM head is the embedding table; --no-tie-embeddings "
                                               "gives it its own matrix", shown=ModelConfig.tie_embeddings)
    attention_bias: bool | None = option(None, "llama: biases on the q, k and v projections (Qwen2's layout)",
                                         shown=ModelConfig.attention_bias)
    # llama's block options (modded-nanogpt's; cllm/config.py)
    activation: str | None = option(None, "llama: the MLP's activation, swiglu or relu2 (relu(x)^2: an fc of F rows, "
                                          "no gate)", shown="swiglu")
    qk_norm: bool | None = option(None, "llama: RMS-normalize each head's queries and keys before the scores",
                                  shown=ModelConfig.qk_norm)
    logit_softcap: float | None = option(None, "llama: cap the logits smoothly, X tanh(logits / X); 0: off",
                                         shown=ModelConfig.logit_softcap)
    zero_init_proj: bool | None = option(None, "llama: start the attention and MLP output projections at zero",
                                         shown=ModelConfig.zero_init_proj)
    batch_size: int = option(12, "sequences per micro-batch per process")
    grad_accum: int = option(1, "micro-batches per optimizer step (a larger effective batch in the same memory)")
    learning_rate: float = option(1e-3, "peak learning rate, after warmup")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = option(100, "steps of linear warmup")
    # Optimizer defaults measured on the README's Shakespeare run (validation loss, 5 seeds; the
    # README's table): nanoGPT's weight decay 0.1, clip 1.0 and beta2 0.99 average 1.902. Weight
    # decay 0 (these runs underfit), beta2 0.999 (768 tokens per step give noisy gradients: a longer
    # average of their squares) and a clip of 5 (the gradient norm sits at 1.5-2.3 in the second
    # half, so a clip of 1 rescaled every step; 5 stays as a guard against spikes) average 1.873,
    # every seed better by 0.02 to 0.04.
    weight_decay: float = option(0.0, "decoupled weight decay of the matrices (AdamW's and Muon's)")
    grad_clip: float = option(5.0, "clip the global gradient norm to this (0: no clipping)")
    beta1: float = option(0.9, "AdamW's first-moment decay")
    beta2: float = option(0.999, "AdamW's second-moment decay")
    # Muon (cllm/optim.py): the blocks' hidden matrices orthogonalized; AdamW (--learning-rate) for the rest
    optimizer: str = option("adamw", "adamw, or muon: Muon for the blocks' weight matrices and AdamW for "
                                     "embeddings, head, biases and gains")
    muon_lr: float = option(0.02, "muon: peak learning rate of the weight matrices (the schedule scales it "
                                  "as --learning-rate)")
    muon_momentum: float = option(0.95, "muon: momentum of the weight matrices (Nesterov)")
    ema_decay: float = option(0.0, "validate, save and hand on an exponential moving average of the weights, "
                                   "over about the last 1/(1 - decay) steps (e.g. 0.999); 0: off")
    dropout: float = option(
        0.0,
        "probability of zeroing activations in training (embeddings, attention "
        "probabilities, residual projections, as nanoGPT); 0: off",
    )
    epochs: float | None = option(
        None,
        f"passes over the training split (none: {EPOCHS:g}, or as many steps as --max-time "
        "allows when it is given without --max-steps; fractions allowed)",
    )
    max_steps: int | None = option(None, "optimizer steps to run (none: from --epochs)")
    max_time: float | None = option(
        None,
        "stop after this many seconds of training; alone (no --max-steps, no "
        "--epochs) it sets the run's length and lays the schedule over it",
    )
    eval_interval: int | None = option(
        None,
        "steps between validations over the whole validation split (none: "
        f"{EVAL_INTERVAL}, or {BUDGET_POINTS} spread over a --max-time budget)",
    )
    checkpoint_interval: int | None = option(
        None,
        f"steps between checkpoints (none: {CHECKPOINT_INTERVAL}, or at each validation of a "
        "--max-time budget; a better validation loss also saves one)",
    )
    sample_interval: int = option(500, "steps between printed samples")
    sample_prompt: str = option("\n", "the text samples start from")
    sample_tokens: int = option(200, "tokens per printed sample")
    keep_last: int = option(3, "step checkpoints kept (besides best)")
    seed: int = option(1337, "random seed of the weights and the batches")
    resume: str | None = option(None, "continue a run in --checkpoint-dir: latest, best or a checkpoint path")
    # fine-tuning (e.g. GPT-2 from `cli.py import-hf`): that checkpoint's sizes and tokenizer, a fresh optimizer
    init_from: str | None = option(
        None,
        "start from this checkpoint's weights; its tokenizer encodes DATA "
        "(--tokenizer and --vocab-size are then ignored)",
    )
    threads: int | None = option(None, "Numba threads (none: the machine's cores, shared among local ranks)")
    # where the model runs (cllm/device.py); cuda needs the [cuda] extra and an NVIDIA GPU
    device: str = option("cpu", "cpu, cuda (under MPI: the GPU of the local rank) or cuda:N")
    val_fraction: float = prepare_field("val_fraction", "share of the data held out for validation (0 < f < 1)")
    filters: str = prepare_field("filters")  # the corpus filters (cllm/data/filters/), as `prepare` runs them
    languages: str = prepare_field("languages")
    checkpoint_dir: str = option("checkpoints/run", "the run's directory: checkpoints, metrics.jsonl, loss.png")
    image_size: int | None = prepare_field("image_size")
    grayscale: bool = prepare_field("grayscale")
    palette: int = prepare_field("palette")
    overwrite: bool = option(False, "replace a finished or unfinished run already in --checkpoint-dir")
    progress: bool = prepare_field("progress")

    def validate(self) -> None:
        def positive(name, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value!r}")

        if self.tokenizer not in ("char", "word", "bpe", "wordpiece", "image") and not os.path.exists(self.tokenizer):
            raise ConfigError(
                f"--tokenizer must be char, word, bpe, wordpiece or a tokenizer file, got {self.tokenizer!r}"
            )
        for name in (
            "vocab_size",
            "embed_dim",
            "num_layers",
            "num_heads",
            "seq_len",
            "max_steps",
            "max_time",
            "threads",
            "epochs",
            "eval_interval",
            "checkpoint_interval",
        ):
            positive(name, allow_none=True)
        for name in ("batch_size", "grad_accum", "learning_rate", "sample_interval", "keep_last"):
            positive(name)
        for name in (
            "batch_size",
            "grad_accum",
            "warmup_steps",
            "eval_interval",
            "checkpoint_interval",
            "sample_interval",
            "keep_last",
            "seed",
            "sample_tokens",
        ):
            if name.endswith("_interval") and getattr(self, name) is None:
                continue
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer, got {getattr(self, name)!r}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ConfigError(f"--min-lr must lie in [0, --learning-rate], got {self.min_lr!r}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("--warmup-steps, --weight-decay and --grad-clip must be >= 0")
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ConfigError("--beta1 and --beta2 must lie in [0, 1)")
        if self.optimizer not in ("adamw", "muon"):
            raise ConfigError(f"--optimizer must be adamw or muon, got {self.optimizer!r}")
        positive("muon_lr")
        if not isinstance(self.muon_momentum, (int, float)) or not 0 <= self.muon_momentum < 1:
            raise ConfigError(f"--muon-momentum must lie in [0, 1), got {self.muon_momentum!r}")
        if self.optimizer == "muon" and self.device != "cpu":
            raise ConfigError("--optimizer muon runs on --device cpu only (no CUDA kernels for it yet); "
                              "use --optimizer adamw on a GPU")
        if not isinstance(self.ema_decay, (int, float)) or isinstance(self.ema_decay, bool) \
                or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.ema_decay and self.device != "cpu":
            raise ConfigError("--ema-decay runs on --device cpu only for now; leave it out on a GPU")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must lie in [0, 1), got {self.dropout!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must lie in (0, 1), got {self.val_fraction!r}")

    def model_flags(self) -> dict:
        return {k: getattr(self, k) for k in MODEL_DEFAULTS}

    def prepare_options(self) -> dict:
        """The fields that are PrepareOptions' (prepare_field's), for prepare_dataset: the data is prepared as
        `cli.py prepare` with the same flags would prepare it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("from")}

    def arch_flags(self) -> dict:
        """The architecture flags given ({ModelConfig field: value}, those left out omitted)."""
        return {k: getattr(self, k) for k in ARCH_FLAGS if getattr(self, k) is not None}

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def build_config(given: dict) -> TrainConfig:
    """A TrainConfig from the flags the user gave. With --resume, the checkpoint's own training
    config is the base (so that `train --resume latest` continues the same run: same data,
    tokenizer and schedule) and the given flags override it."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    base = {}
    if given.get("resume"):
        ckdir = given.get("checkpoint_dir", TrainConfig.checkpoint_dir)
        target = given["resume"]
        path = os.path.join(ckdir, target) if target in ("latest", "best") else target
        saved = ck.read_config(ck.resolve_checkpoint(path)).get("train", {})
        base = {k: v for k, v in saved.items() if k in names and k not in ("resume", "progress")}
    base.update(given)
    return TrainConfig(**base)
