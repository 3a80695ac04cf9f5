"""Model configuration: sizes, validation with clear errors, and a memory estimate.

The original C program crashed while creating a model it could not hold; here an impossible config is
refused before any buffer is allocated, with a message naming the figure and the fix.
"""
from __future__ import annotations

import dataclasses
import math
import os

from cllm.errors import ConfigError

BYTES_PER_FLOAT = 4  # the memory check counts float32 buffers (the model's dtype unless a test asks for float64)


def option(default, help: str, *, shown=None):
    """A config field that is also a command-line flag: its default, a one-line meaning for --help,
    and, when the stored default is a placeholder (None: "decided later"), the default --help shows."""
    metadata = {"help": help}
    if shown is not None:
        metadata["shown"] = shown
    return dataclasses.field(default=default, metadata=metadata)


def padded_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """Vp: the vocabulary rounded up so that the LM head's rows stay aligned (llm.c pads 50257 to 50304)."""
    return ((vocab_size + multiple - 1) // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A GPT's sizes; the defaults are a new `cli.py train` run's (TrainConfig's model flags show them)."""

    vocab_size: int = option(65, "V: number of real token ids")
    max_seq_len: int = option(64, "maxT: number of learned positions, the context length")
    num_layers: int = option(4, "L: transformer blocks")
    num_heads: int = option(4, "NH: attention heads (divides embed_dim)")
    embed_dim: int = option(128, "C: the model's width")
    padded_vocab_size: int = option(0, "Vp: rows of the embedding table; 0 rounds vocab_size up to a multiple of 64")
    # The architecture. gpt2: learned positions, LayerNorm with biases, GELU MLP of 4C, biases everywhere, LM head
    # tied to wte. llama: rotary positions (RoPE), RMSNorm, SwiGLU MLP, grouped-query attention, no biases (Qwen2:
    # biases on q, k and v), the LM head tied or its own matrix.
    arch: str = option("gpt2", "gpt2 or llama")
    num_kv_heads: int = option(0, "NKV: key/value heads, each shared by NH/NKV query heads (0: NH)")
    ffn_dim: int = option(0, "F: hidden units of the MLP (0: 4C for gpt2, 8C/3 rounded up to a multiple of 64 "
                             "for llama)")
    rope_theta: float = option(10000.0, "llama: the base of the rotary embeddings' frequencies")
    norm_eps: float = option(1e-5, "epsilon of every normalization (LayerNorm or RMSNorm)")
    tie_embeddings: bool = option(True, "the LM head is wte (gpt2 always); false: its own (Vp,C) matrix lm_head")
    attention_bias: bool = option(False, "llama: biases on the q, k and v projections (Qwen2's layout)")
    # llama's block options (modded-nanogpt's); the defaults are the plain Llama block, so a config.json written
    # before they existed loads unchanged
    activation: str = option("", "the MLP's activation: gelu (gpt2), swiglu or relu2 (llama); empty: the "
                                 "architecture's (gelu, swiglu)")
    qk_norm: bool = option(False, "llama: RMS-normalize each head's q and k (no gain) before the scores")
    logit_softcap: float = option(0.0, "llama: logits = X tanh(logits / X) with this X; 0: off")
    zero_init_proj: bool = option(False, "llama: the attention and MLP output projections start at zero")

    def __post_init__(self):
        check_sizes(vocab_size=self.vocab_size, max_seq_len=self.max_seq_len, num_layers=self.num_layers,
                    num_heads=self.num_heads, embed_dim=self.embed_dim)
        if self.padded_vocab_size == 0:
            object.__setattr__(self, "padded_vocab_size", padded_vocab_size(self.vocab_size))
        if self.padded_vocab_size < self.vocab_size:
            raise ConfigError(f"padded_vocab_size ({self.padded_vocab_size}) is smaller than "
                              f"vocab_size ({self.vocab_size})")
        self._settle_architecture()

    def _settle_architecture(self) -> None:
        """Refuse what the architecture cannot be; resolve the 0 placeholders of num_kv_heads and ffn_dim."""
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
        C, NH = self.embed_dim, self.num_heads
        for name in ("num_kv_heads", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer (0: the architecture's default), "
                                  f"got {value!r}")
        if not (isinstance(self.norm_eps, (int, float)) and 0 < self.norm_eps < 1):
            raise ConfigError(f"norm_eps must be a small positive number, got {self.norm_eps!r}")
        cap = self.logit_softcap
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not (cap == 0 or 0 < cap < math.inf):
            raise ConfigError(f"logit_softcap must be 0 (off) or a positive number, got {cap!r}")
        if self.arch == "gpt2":
            changed = [f"--{flag}" for flag, bad in (
                ("num-kv-heads", self.num_kv_heads not in (0, NH)), ("ffn-dim", self.ffn_dim not in (0, 4 * C)),
                ("no-tie-embeddings", not self.tie_embeddings), ("attention-bias", self.attention_bias))
                if bad]
            if changed:
                raise ConfigError(f"{', '.join(changed)}: GPT-2's layout has every head's keys and values, a 4C "
                                  "MLP, biases everywhere and a tied LM head; use --arch llama")
            options = self.block_options()
            if self.activation not in ("", "gelu"):
                options.insert(0, f"--activation {self.activation}")
            if options:
                raise ConfigError(f"{', '.join(options)}: llama's block options; GPT-2's block has none of them "
                                  "(use --arch llama)")
            object.__setattr__(self, "activation", "gelu")
            object.__setattr__(self, "num_kv_heads", NH)
            object.__setattr__(self, "ffn_dim", 4 * C)
            return
        nkv = self.num_kv_heads or NH
        if NH % nkv != 0:
            raise ConfigError(f"num_heads ({NH}) must be a multiple of num_kv_heads ({nkv}): each key/value head "
                              f"serves the same number of query heads")
        if (C // NH) % 2 != 0:
            raise ConfigError(f"the head size embed_dim/num_heads ({C // NH}) must be even: rotary embeddings turn "
                              "pairs of dimensions")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 1):
            raise ConfigError(f"rope_theta must be a number above 1, got {self.rope_theta!r}")
        if self.activation not in ("",) + LLAMA_ACTIVATIONS:
            raise ConfigError(f"activation {self.activation!r} is not llama's; choose one of: "
                              f"{', '.join(LLAMA_ACTIVATIONS)}")
        object.__setattr__(self, "activation", self.activation or "swiglu")
        object.__setattr__(self, "num_kv_heads", nkv)
        object.__setattr__(self, "ffn_dim", self.ffn_dim or llama_ffn_dim(C))

    def block_options(self) -> list[str]:
        """The llama block options this config turns on, as flags (--activation aside: forward_options adds relu2)."""
        return [flag for flag, on in (
            ("--qk-norm", self.qk_norm), (f"--logit-softcap {self.logit_softcap:g}", self.logit_softcap),
            ("--zero-init-proj", self.zero_init_proj)) if on]

    def forward_options(self) -> list[str]:
        """The options that change the forward (not the init): what a kernel set or a file format must know."""
        relu2 = [f"--activation {self.activation}"] if self.activation == "relu2" else []
        return relu2 + [flag for flag in self.block_options() if flag != "--zero-init-proj"]

    def check_exportable(self, what: str) -> None:
        """Refuse to write a model with forward options that `what` (a format) cannot express."""
        options = self.forward_options()
        if options:
            raise ConfigError(f"{what} cannot express {', '.join(options)}: the format has no such field, and a "
                              "reader would compute other logits than this model; export a model trained without "
                              "them")

    @property
    def mlp_rows(self) -> int:
        """Rows of the MLP's fc matrix (and channels of its output): 2F for SwiGLU (gate and up), F otherwise."""
        return 2 * self.ffn_dim if self.activation == "swiglu" else self.ffn_dim

    @property
    def head_size(self) -> int:
        """hs: the width of one attention head."""
        return self.embed_dim // self.num_heads

    @property
    def kv_dim(self) -> int:
        """Channels of one position's keys (or values): NKV*hs (C for gpt2), what the KV cache holds per layer."""
        return self.num_kv_heads * self.head_size

    def kv_cache_size(self, num_sequences: int = 1) -> int:
        """Floats of a KV cache for num_sequences: per sequence and layer, the keys and values of maxT positions."""
        return num_sequences * self.num_layers * self.max_seq_len * 2 * self.kv_dim

    @property
    def qkv_dim(self) -> int:
        """Rows of the packed q, k, v projection: NH query heads, then NKV key heads, then NKV value heads."""
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_size

    # the shapes of the parameter tensors, in their file order: gpt2's is llm.c's
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.arch == "llama":
            return self._llama_param_shapes()
        L, C, Vp, maxT = self.num_layers, self.embed_dim, self.padded_vocab_size, self.max_seq_len
        return {
            "wte": (Vp, C), "wpe": (maxT, C),
            "ln1w": (L, C), "ln1b": (L, C),
            "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
            "attprojw": (L, C, C), "attprojb": (L, C),
            "ln2w": (L, C), "ln2b": (L, C),
            "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
            "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
            "lnfw": (C,), "lnfb": (C,),
        }

    def _llama_param_shapes(self) -> dict[str, tuple[int, ...]]:
        # qkvw: the q rows (NH*hs), then k (NKV*hs), then v (NKV*hs), as HF's q_proj, k_proj, v_proj stacked;
        # fcw: the gate rows (F), then the up rows (F), as gate_proj and up_proj stacked (relu2: F rows, no gate);
        # fcprojw is down_proj.
        L, C, Vp, F, QKV = self.num_layers, self.embed_dim, self.padded_vocab_size, self.ffn_dim, self.qkv_dim
        shapes = {"wte": (Vp, C), "ln1w": (L, C), "qkvw": (L, QKV, C)}
        if self.attention_bias:
            shapes["qkvb"] = (L, QKV)
        shapes.update({"attprojw": (L, C, C), "ln2w": (L, C), "fcw": (L, self.mlp_rows, C), "fcprojw": (L, C, F),
                       "lnfw": (C,)})
        if not self.tie_embeddings:
            shapes["lm_head"] = (Vp, C)
        return shapes

    def num_parameters(self) -> int:
        return _total(self.param_shapes())

    def activation_shapes(self, B: int, T: int) -> dict[str, tuple[int, ...]]:
        # the forward's saved activations for a batch (B,T), as llm.c's ActivationTensors, but without
        # the attention scores (llm.c's preatt): the backward reads only the probabilities, so the
        # scores are the attention kernel's scratch (at GPT-2 small's size, B=4 T=256, 12 x 12 MiB)
        L, C, NH, Vp = self.num_layers, self.embed_dim, self.num_heads, self.padded_vocab_size
        if self.arch == "llama":
            # no LayerNorm means (RMSNorm keeps rstd only); qkv holds q and k after RoPE (the attention's
            # backward reads the rotated ones; with qk_norm, normalized, and qk_rstd each q and k head's
            # 1/rms: cllm/kernels/qknorm.py); fch (2F) gate|up, fch_swiglu (F) their SwiGLU (relu2: fch (F), and
            # fch_swiglu its relu2); with logit_softcap, logits are the capped ones
            F, QKV, FH = self.ffn_dim, self.qkv_dim, self.mlp_rows
            qk = {"qk_rstd": (L, B, T, NH + self.num_kv_heads)} if self.qk_norm else {}
            return {
                "encoded": (B, T, C),
                "ln1": (L, B, T, C), "ln1_rstd": (L, B, T),
                "qkv": (L, B, T, QKV), **qk, "atty": (L, B, T, C),
                "att": (L, B, NH, T, T),
                "attproj": (L, B, T, C), "residual2": (L, B, T, C),
                "ln2": (L, B, T, C), "ln2_rstd": (L, B, T),
                "fch": (L, B, T, FH), "fch_swiglu": (L, B, T, F),
                "fcproj": (L, B, T, C), "residual3": (L, B, T, C),
                "lnf": (B, T, C), "lnf_rstd": (B, T),
                "logits": (B, T, Vp), "probs": (B, T, Vp), "losses": (B, T),
            }
        return {
            "encoded": (B, T, C),
            "ln1": (L, B, T, C), "ln1_mean": (L, B, T), "ln1_rstd": (L, B, T),
            "qkv": (L, B, T, 3 * C), "atty": (L, B, T, C),
            "att": (L, B, NH, T, T),
            "attproj": (L, B, T, C), "residual2": (L, B, T, C),
            "ln2": (L, B, T, C), "ln2_mean": (L, B, T), "ln2_rstd": (L, B, T),
            "fch": (L, B, T, 4 * C), "fch_gelu": (L, B, T, 4 * C),
            "fcproj": (L, B, T, C), "residual3": (L, B, T, C),
            "lnf": (B, T, C), "lnf_mean": (B, T), "lnf_rstd": (B, T),
            "logits": (B, T, Vp), "probs": (B, T, Vp), "losses": (B, T),
        }

    def grad_activation_shapes(self, B: int, T: int) -> dict[str, tuple[int, ...]]:
        # the backward's activation gradients: ONE layer's, shared by every layer, because the backward
        # of layer l reads no other layer's gradients but the residual stream's, and each layer's
        # kernels overwrite each buffer before adding to it (cllm/model.py's _backward_graph). "residual"
        # is the residual stream's gradient, from the last layer's output down to the embeddings.
        # Not kept: the scores' and probabilities' gradients (attention's backward never needs them),
        # the softmax output's and the logits' (the fused cross-entropy backward turns the forward's
        # probabilities into the logits' gradient in place: at GPT-2 small's size, B=4 T=256, 196 MiB)
        # and the LayerNorm statistics' (their backward reads the forward's statistics).
        # Nor the residual connections' outputs': "residual" passes through them and the LayerNorms add
        # into it in place. "dropped" holds a projection's output gradient through its dropout mask
        # (with dropout only; the attention and MLP projections use it in turn).
        C = self.embed_dim
        if self.arch == "llama":  # the same buffers with llama's widths
            F = self.ffn_dim
            return {
                "residual": (B, T, C),
                "ln1": (B, T, C), "qkv": (B, T, self.qkv_dim), "atty": (B, T, C),
                "ln2": (B, T, C), "fch": (B, T, self.mlp_rows), "fch_swiglu": (B, T, F), "dropped": (B, T, C),
                "lnf": (B, T, C), "losses": (B, T),
            }
        return {
            "residual": (B, T, C),
            "ln1": (B, T, C), "qkv": (B, T, 3 * C), "atty": (B, T, C),
            "ln2": (B, T, C), "fch": (B, T, 4 * C), "fch_gelu": (B, T, 4 * C), "dropped": (B, T, C),
            "lnf": (B, T, C), "losses": (B, T),
        }

    def num_activations(self, B: int, T: int) -> int:
        return _total(self.activation_shapes(B, T))

    def num_grad_activations(self, B: int, T: int) -> int:
        return _total(self.grad_activation_shapes(B, T))

    def memory_bytes(self, B: int, T: int, training: bool = True) -> int:
        """Bytes the model needs: parameters (+ grads, AdamW m and v when training) and activations
        (+ their gradients when training) for a batch (B,T), plus a 10% allowance for BLAS scratch."""
        P = self.num_parameters()
        A = self.num_activations(B, T)
        floats = P * 4 + A + self.num_grad_activations(B, T) if training else P + A
        return int(floats * BYTES_PER_FLOAT * 1.1)

    def check_batch(self, B: int, T: int, training: bool = True) -> None:
        """Refuse a batch that cannot run: T beyond the learned positions, or more memory than the machine has."""
        for name, value in (("batch_size", B), ("seq_len", T)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if T > self.max_seq_len:
            raise ConfigError(f"seq_len ({T}) exceeds the model's max_seq_len ({self.max_seq_len})")
        self.check_memory(B, T, training)

    def check_memory(self, B: int = 0, T: int = 0, training: bool = True) -> None:
        """Refuse, before anything is allocated, a model (B = T = 0: its four parameter-sized
        buffers alone) or a model and batch that need more memory than the machine has."""
        need = self.memory_bytes(B, T, training)
        have = available_memory_bytes()
        if have is not None and need > have:
            what = f", batch {B} x {T}" if B and T else ""
            raise ConfigError(
                f"this configuration needs about {need / 2**30:.1f} GiB "
                f"({self.num_parameters():,} parameters{what}) but only "
                f"{have / 2**30:.1f} GiB of memory is available; reduce --batch-size, --seq-len, "
                f"--embed-dim, --num-layers or --vocab-size")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)


ARCHITECTURES = ("gpt2", "llama")
LLAMA_ACTIVATIONS = ("swiglu", "relu2")


def llama_ffn_dim(C: int) -> int:
    """Llama's MLP width for a model of width C: two thirds of 4C (SwiGLU's three matrices then hold as many
    weights as GELU's two of 4C), rounded up to a multiple of 64."""
    return -(-(8 * C // 3) // 64) * 64


def check_sizes(**sizes: int) -> None:
    """Refuse sizes that make no model: each a positive integer, embed_dim a multiple of num_heads.
    A new training run checks its sizes with this before its data (and so its vocabulary) is read."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    embed_dim, num_heads = sizes.get("embed_dim"), sizes.get("num_heads")
    if embed_dim and num_heads and embed_dim % num_heads != 0:
        raise ConfigError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}); "
                          f"try --num-heads {_nearest_divisor(embed_dim, num_heads)}")


def _nearest_divisor(n: int, near: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - near), d))


def available_memory_bytes() -> int | None:
    """Memory available to this process (MemAvailable, or a smaller cgroup limit), None if unknown."""
    best = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    best = int(line.split()[1]) * 1024
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < (1 << 60):
            best = int(raw) if best is None else min(best, int(raw))
    if best is None:
        try:
            best = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return best


def _total(shapes: dict[str, tuple[int, ...]]) -> int:
    """Elements of all the tensors of a {name: shape} table."""
    return sum(math.prod(shape) for shape in shapes.values())
