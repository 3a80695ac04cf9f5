"""The GPT model: owns every buffer, calls the kernels.

Buffers (all flat, of the model's dtype, float32 unless a test asks for float64):
  params, grads, m, v   (P)  parameters, their gradients, AdamW first and second moments;
                             named views in GPT-2's order (ModelConfig.param_shapes); grads, m
                             and v are allocated on first use (never, when only generating)
  acts                  (A)  activations saved by the forward for batch (B,T): named views as in
                             ModelConfig.activation_shapes; re-allocated when B or T changes
  grad_acts                  their gradients, allocated by the first backward: one layer's, which
                             every layer reuses (ModelConfig.grad_activation_shapes)
gpt2: pre-LayerNorm blocks, GELU MLP with 4C hidden units, learned positions, LM head tied to wte.
llama: pre-RMSNorm blocks, rotary positions on q and k, grouped-query attention, SwiGLU MLP of F hidden
units, no biases (but qkvb with attention_bias), LM head wte or its own lm_head (docs/design.md).

Model implements cllm/model_interface.py's LanguageModel. Two bases hold what it shares with the other
implementations: GPTGraph, the forward and backward of each architecture over named views for a kernel set (also
cllm/device.py's CudaModel), and HostDecoding, the KV-cache decoding with the CPU kernels (also
cllm/quantize.py's Int8Model).
"""
from __future__ import annotations

import abc
import math

import numpy as np

import cllm.kernels as K
from cllm.config import ModelConfig
from cllm.errors import ConfigError
from cllm.kernels.decode import decode_batch as decode_batch_kernel
from cllm.kernels.dropout import dropout_threshold
from cllm.model_interface import LanguageModel, read_only
from cllm.runtime import configure_threads

# dropout sites (nanoGPT's placement), the counters that give each its own mask stream per layer
DROP_EMBEDDING, DROP_ATTENTION, DROP_ATTPROJ, DROP_FCPROJ = range(4)
MATRIX_PARAMS = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw", "lm_head")  # weight-decayed, normal init
RESIDUAL_PROJECTIONS = ("attprojw", "fcprojw")  # init std scaled by 1/sqrt(2L) (GPT-2; nanoGPT's Llama too)
NOT_PER_LAYER = ("wte", "wpe", "lm_head")  # the matrices that are not a stack of L layers
BACKWARD_NEEDS_FORWARD = "backward() needs a forward(idx, targets) first (one backward per forward)"
TOKEN_LOSSES_NEED_TARGETS = "token_losses() needs the last forward to have had targets"


def _carve(buffer: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Named flat views into consecutive ranges of `buffer`, in the order of `shapes`."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        views[name] = buffer[offset:offset + n]
        offset += n
    assert offset == buffer.size
    return views


def _flat_values(values, size: int, what: str) -> np.ndarray:
    """load_params / load_grads' input: `size` host values, flattened (ConfigError for another count)."""
    values = np.asarray(values).reshape(-1)
    if values.size != size:
        raise ConfigError(f"{what} holds {values.size} values; the model has {size} parameters")
    return values


def rope_tables(config: ModelConfig, dtype) -> tuple[np.ndarray, np.ndarray]:
    """llama's RoPE (cos, sin) tables (maxT, hs/2) flat, of dtype, for the model's positions and theta."""
    return K.rope_table(config.max_seq_len, config.head_size, config.rope_theta, dtype)


class GPTGraph(LanguageModel):
    """The training graph, once, for every device: the forward and backward over named flat views, calling
    the kernel set `self.ops` (cllm/kernels here; cllm/kernels/cuda for cllm/device.py's CudaModel), with one
    pair of methods per architecture (_gpt2_*, _llama_*). GPT-2's attention, whose kernels differ in signature
    between devices, is each subclass's _attention_forward / _attention_backward; llama's GQA kernels share
    theirs. Subclasses set drop and drop_key (the dropout threshold and key of the last forward) and config."""

    ops = K
    drop, drop_key = 0, 0
    num_targets = 0  # the last forward's count of targets >= 0 (-1: no loss there), what its mean divides by
    _dloss = 0.0  # d(loss)/d(each unmasked token's loss) of the backward under way
    _rope = None  # llama's (cos, sin) tables (maxT, hs/2), built on first use

    def _rope_tables(self):
        """llama's RoPE (cos, sin) of the model's dtype, as arrays the kernel set takes (device arrays on CUDA)."""
        if self._rope is None:
            self._rope = tuple(self._to_ops(t) for t in rope_tables(self.config, self.dtype))
        return self._rope

    def _to_ops(self, array: np.ndarray):
        """A host array as the kernel set takes it (CudaModel copies it to the device)."""
        return array

    @abc.abstractmethod
    def _attention_forward(self, al: dict, B: int, T: int, l: int) -> None:
        """Layer l's attention: al["qkv"] -> al["att"] (the probabilities) and al["atty"]."""

    @abc.abstractmethod
    def _attention_backward(self, gal: dict, al: dict, B: int, T: int, l: int) -> None:
        """Layer l's attention backward: gal["atty"] -> gal["qkv"] (overwritten)."""

    def _forward_graph(self, p: dict, a: dict, inputs, B: int, T: int) -> None:
        """Embeddings to logits: fills every activation view of `a` (p: the parameter views)."""
        if self.config.arch == "llama":
            self._llama_forward_graph(p, a, inputs, B, T)
        else:
            self._gpt2_forward_graph(p, a, inputs, B, T)

    def _backward_graph(self, p: dict, g: dict, a: dict, ga: dict, inputs, targets, B: int, T: int) -> None:
        """The mean loss's gradients: into the parameter gradients g (+=) through the activation gradients ga.
        These are not zeroed: the first kernel to write each one overwrites it (overwrite=True; it writes every
        element), the later ones add, as the contract says. Zeroing them cost a pass over ~550 MB per step at
        the medium config's size (L6 NH8 C256)."""
        if self.config.arch == "llama":
            self._llama_backward_graph(p, g, a, ga, inputs, targets, B, T)
        else:
            self._gpt2_backward_graph(p, g, a, ga, inputs, targets, B, T)

    def _mean_loss(self, losses: np.ndarray, targets: np.ndarray) -> float:
        """The mean of a forward's host losses (B*T,) over the positions whose target is not -1 (their losses
        are 0, so the sum of all is theirs), counted here once per forward into num_targets. A batch with no
        target at all has loss 0 (no 0/0; its backward gives zero gradients)."""
        self.num_targets = int(np.count_nonzero(targets >= 0))
        if not self.num_targets:
            return 0.0
        return float(np.sum(losses, dtype=np.float64) / self.num_targets)  # np.mean's bits when nothing is masked

    def _start_backward(self, normalizer: float | None) -> None:
        """The backward differentiates (sum of the unmasked token losses) / normalizer; None: / num_targets,
        i.e. the mean loss. A normalizer of 0 (nothing to score) gives zero gradients, not a division by 0."""
        n = self.num_targets if normalizer is None else normalizer
        if n < 0:
            raise ValueError(f"backward's normalizer must be >= 0, got {n}")
        self._dloss = 1.0 / n if n else 0.0

    def _lm_head_backward(self, p: dict, g: dict, a: dict, ga: dict, targets, B: int, T: int) -> None:
        """The loss's gradient down to the final norm's output ga["lnf"] (overwritten), and the LM head's."""
        ops, cfg = self.ops, self.config
        C, V, Vp = cfg.embed_dim, cfg.vocab_size, cfg.padded_vocab_size
        head = "wte" if cfg.tie_embeddings else "lm_head"
        # d(loss)/d(each token's loss): 1/(B*T) without masks, as the plain mean; rows with target -1 ignore it
        ops.fill_inplace(ga["losses"], self._dloss)
        # the probabilities become the logits' gradient in place: nothing reads them after this
        ops.crossentropy_softmax_backward_inplace(a["probs"], ga["losses"], targets, B, T, V, Vp)
        if cfg.logit_softcap:  # to the uncapped logits' gradient, in place: dy/dx = 1 - (capped / cap)^2
            ops.softcap_backward(a["probs"], a["probs"], a["logits"], B * T * Vp, cfg.logit_softcap, True)
        ops.matmul_backward(ga["lnf"], g[head], None, a["probs"], a["lnf"], p[head], B, T, C, Vp, True)

    def _llama_forward_graph(self, p: dict, a: dict, inputs, B: int, T: int) -> None:
        ops, cfg = self.ops, self.config
        L, C, NH, NKV, hs = cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_size
        F, QKV, eps, N = cfg.ffn_dim, cfg.qkv_dim, cfg.norm_eps, B * T
        drop, key = self.drop, self._site_key
        relu2 = cfg.activation == "relu2"
        cos, sin = self._rope_tables()
        ops.encoder_forward(a["encoded"], inputs, p["wte"], None, B, T, C)  # no positions: RoPE places them
        if drop:  # dropout at GPT-2's four sites, in place (no backward reads these outputs)
            ops.dropout_forward(a["encoded"], a["encoded"], N * C, drop, key(0, DROP_EMBEDDING))
        residual = a["encoded"]
        for l in range(L):
            pl, al = self._layer(p, l), self._layer_acts(a, l)
            ops.rmsnorm_forward(al["ln1"], al["ln1_rstd"], residual, pl["ln1w"], N, C, eps)
            ops.matmul_forward(al["qkv"], al["ln1"], pl["qkvw"], pl.get("qkvb"), B, T, C, QKV)
            ops.rope_forward(al["qkv"], cos, sin, B, T, NH, NKV, hs)
            if cfg.qk_norm:
                # after RoPE, in place (modded-nanogpt normalizes before it: the same numbers, as a rotation of
                # pairs keeps each head's sum of squares; after, the attention's backward and qknorm_backward
                # both read the normalized values kept in qkv, and no unnormalized copy is needed)
                ops.qknorm_forward(al["qkv"], al["qk_rstd"], N, NH, NKV, hs, eps)
            ops.gqa_forward(al["atty"], al["att"], al["qkv"], B, T, NH, NKV, hs, drop, key(l, DROP_ATTENTION))
            ops.matmul_forward(al["attproj"], al["atty"], pl["attprojw"], None, B, T, C, C)
            if drop:
                ops.dropout_forward(al["attproj"], al["attproj"], N * C, drop, key(l, DROP_ATTPROJ))
            ops.residual_forward(al["residual2"], residual, al["attproj"], N * C)
            ops.rmsnorm_forward(al["ln2"], al["ln2_rstd"], al["residual2"], pl["ln2w"], N, C, eps)
            ops.matmul_forward(al["fch"], al["ln2"], pl["fcw"], None, B, T, C, cfg.mlp_rows)
            if relu2:
                ops.relu2_forward(al["fch_swiglu"], al["fch"], N, F)
            else:
                ops.swiglu_forward(al["fch_swiglu"], al["fch"], N, F)
            ops.matmul_forward(al["fcproj"], al["fch_swiglu"], pl["fcprojw"], None, B, T, F, C)
            if drop:
                ops.dropout_forward(al["fcproj"], al["fcproj"], N * C, drop, key(l, DROP_FCPROJ))
            ops.residual_forward(al["residual3"], al["residual2"], al["fcproj"], N * C)
            residual = al["residual3"]
        ops.rmsnorm_forward(a["lnf"], a["lnf_rstd"], residual, p["lnfw"], N, C, eps)
        head = p["wte"] if cfg.tie_embeddings else p["lm_head"]
        ops.matmul_forward(a["logits"], a["lnf"], head, None, B, T, C, cfg.padded_vocab_size)
        if cfg.logit_softcap:  # in place: the backward needs only the capped logits
            ops.softcap_forward(a["logits"], a["logits"], N * cfg.padded_vocab_size, cfg.logit_softcap)

    def _llama_backward_graph(self, p: dict, g: dict, a: dict, ga: dict, inputs, targets, B: int, T: int) -> None:
        ops, cfg = self.ops, self.config
        L, C, NH, NKV, hs = cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_size
        F, QKV, N = cfg.ffn_dim, cfg.qkv_dim, B * T
        drop, key = self.drop, self._site_key
        relu2 = cfg.activation == "relu2"
        cos, sin = self._rope_tables()
        self._lm_head_backward(p, g, a, ga, targets, B, T)
        dres = ga["residual"]  # the residual stream's gradient, as in _gpt2_backward_graph
        ops.rmsnorm_backward(dres, g["lnfw"], ga["lnf"], self._layer_acts(a, L - 1)["residual3"], p["lnfw"],
                             a["lnf_rstd"], N, C, True)
        for l in reversed(range(L)):
            pl, gl, al = self._layer(p, l), self._layer(g, l), self._layer_acts(a, l)
            residual = a["encoded"] if l == 0 else self._layer_acts(a, l - 1)["residual3"]
            ops.matmul_backward(ga["fch_swiglu"], gl["fcprojw"], None, self._projection_grad(ga, l, DROP_FCPROJ),
                                al["fch_swiglu"], pl["fcprojw"], B, T, F, C, True)
            if relu2:
                ops.relu2_backward(ga["fch"], ga["fch_swiglu"], al["fch"], N, F, True)
            else:
                ops.swiglu_backward(ga["fch"], ga["fch_swiglu"], al["fch"], N, F, True)
            ops.matmul_backward(ga["ln2"], gl["fcw"], None, ga["fch"], al["ln2"], pl["fcw"], B, T, C, cfg.mlp_rows,
                                True)
            ops.rmsnorm_backward(dres, gl["ln2w"], ga["ln2"], al["residual2"], pl["ln2w"], al["ln2_rstd"], N, C)
            ops.matmul_backward(ga["atty"], gl["attprojw"], None, self._projection_grad(ga, l, DROP_ATTPROJ),
                                al["atty"], pl["attprojw"], B, T, C, C, True)
            ops.gqa_backward(ga["qkv"], ga["atty"], al["qkv"], al["att"], B, T, NH, NKV, hs, True, drop,
                             key(l, DROP_ATTENTION))
            if cfg.qk_norm:  # to the rotated, unnormalized q and k
                ops.qknorm_backward(ga["qkv"], al["qkv"], al["qk_rstd"], N, NH, NKV, hs)
            ops.rope_backward(ga["qkv"], cos, sin, B, T, NH, NKV, hs)  # to the unrotated q and k
            ops.matmul_backward(ga["ln1"], gl["qkvw"], gl.get("qkvb"), ga["qkv"], al["ln1"], pl["qkvw"],
                                B, T, C, QKV, True)
            ops.rmsnorm_backward(dres, gl["ln1w"], ga["ln1"], residual, pl["ln1w"], al["ln1_rstd"], N, C)
        if drop:
            ops.dropout_backward(dres, dres, N * C, drop, key(0, DROP_EMBEDDING))
        ops.encoder_backward(g["wte"], None, dres, inputs, B, T, C)

    def _gpt2_forward_graph(self, p: dict, a: dict, inputs, B: int, T: int) -> None:
        ops, cfg = self.ops, self.config
        L, C = cfg.num_layers, cfg.embed_dim
        drop, key = self.drop, self._site_key
        ops.encoder_forward(a["encoded"], inputs, p["wte"], p["wpe"], B, T, C)
        if drop:  # in place: the encoder's backward never reads its output
            ops.dropout_forward(a["encoded"], a["encoded"], B * T * C, drop, key(0, DROP_EMBEDDING))
        residual = a["encoded"]
        for l in range(L):
            # three parallel regions per layer: LayerNorm 1 with the qkv product, attention, and the
            # rest of the block row by row (cllm/kernels/block.py has the sequence of kernels each stands for)
            pl, al = self._layer(p, l), self._layer_acts(a, l)
            ops.layernorm_matmul_forward(al["ln1"], al["ln1_mean"], al["ln1_rstd"], al["qkv"], residual, pl["ln1w"],
                                         pl["ln1b"], pl["qkvw"], pl["qkvb"], B, T, C, 3 * C)
            self._attention_forward(al, B, T, l)
            # the projections' dropout is in place: matmul_backward reads inputs only
            ops.block_tail_forward(al["attproj"], al["residual2"], al["ln2"], al["ln2_mean"], al["ln2_rstd"], al["fch"],
                                   al["fch_gelu"], al["fcproj"], al["residual3"], al["atty"], residual,
                                   pl["attprojw"], pl["attprojb"], pl["ln2w"], pl["ln2b"], pl["fcw"], pl["fcb"],
                                   pl["fcprojw"], pl["fcprojb"], B, T, C, drop, key(l, DROP_ATTPROJ),
                                   key(l, DROP_FCPROJ))
            residual = al["residual3"]
        ops.layernorm_matmul_forward(a["lnf"], a["lnf_mean"], a["lnf_rstd"], a["logits"], residual, p["lnfw"],
                                     p["lnfb"], p["wte"], None, B, T, C, cfg.padded_vocab_size)

    def _gpt2_backward_graph(self, p: dict, g: dict, a: dict, ga: dict, inputs, targets, B: int, T: int) -> None:
        ops, cfg = self.ops, self.config
        L, C = cfg.num_layers, cfg.embed_dim
        drop, key = self.drop, self._site_key
        self._lm_head_backward(p, g, a, ga, targets, B, T)
        # ga holds one layer's activation gradients, which every layer reuses, and the residual stream's
        # gradient ga["residual"]: the last layer's output's, then each layer turns it into its input's
        dres = ga["residual"]
        ops.layernorm_backward(dres, g["lnfw"], g["lnfb"], ga["lnf"], self._layer_acts(a, L - 1)["residual3"],
                               p["lnfw"], a["lnf_mean"], a["lnf_rstd"], B, T, C, True)

        for l in reversed(range(L)):
            pl, gl, al = self._layer(p, l), self._layer(g, l), self._layer_acts(a, l)
            residual = a["encoded"] if l == 0 else self._layer_acts(a, l - 1)["residual3"]
            # dres holds this layer's output's gradient. Each residual connection passes it through
            # unchanged, so the projections read dres itself and the LayerNorms add into it in place:
            # after LN2's backward it is residual2's gradient, after LN1's the layer input's.
            dfcproj = self._projection_grad(ga, l, DROP_FCPROJ)
            ops.matmul_backward(ga["fch_gelu"], gl["fcprojw"], gl["fcprojb"], dfcproj, al["fch_gelu"],
                                pl["fcprojw"], B, T, 4 * C, C, True)
            ops.gelu_backward(ga["fch"], al["fch"], ga["fch_gelu"], B * T * 4 * C, True)
            ops.matmul_backward(ga["ln2"], gl["fcw"], gl["fcb"], ga["fch"], al["ln2"], pl["fcw"], B, T, C, 4 * C,
                                True)
            ops.layernorm_backward(dres, gl["ln2w"], gl["ln2b"], ga["ln2"], al["residual2"], pl["ln2w"],
                                   al["ln2_mean"], al["ln2_rstd"], B, T, C)
            dattproj = self._projection_grad(ga, l, DROP_ATTPROJ)
            ops.matmul_backward(ga["atty"], gl["attprojw"], gl["attprojb"], dattproj, al["atty"],
                                pl["attprojw"], B, T, C, C, True)
            self._attention_backward(ga, al, B, T, l)
            ops.matmul_backward(ga["ln1"], gl["qkvw"], gl["qkvb"], ga["qkv"], al["ln1"], pl["qkvw"],
                                B, T, C, 3 * C, True)
            ops.layernorm_backward(dres, gl["ln1w"], gl["ln1b"], ga["ln1"], residual, pl["ln1w"],
                                   al["ln1_mean"], al["ln1_rstd"], B, T, C)
        if drop:
            ops.dropout_backward(dres, dres, B * T * C, drop, key(0, DROP_EMBEDDING))
        ops.encoder_backward(g["wte"], g["wpe"], dres, inputs, B, T, C)

    def _projection_grad(self, ga: dict, l: int, site: int):
        """A residual projection's output gradient: the residual stream's gradient ga["residual"] itself, or
        with dropout that through the site's mask, in ga["dropped"] (the mask multiplies the projection's
        path, not the skip's)."""
        if not self.drop:
            return ga["residual"]
        n = ga["dropped"].size
        self.ops.dropout_backward(ga["dropped"], ga["residual"], n, self.drop, self._site_key(l, site))
        return ga["dropped"]

    def _site_key(self, layer: int, site: int) -> int:
        """The mask key of one dropout site of one layer in the last forward (0 when dropout is off)."""
        return K.derive_key(self.drop_key, layer, site) if self.drop else 0

    def _layer(self, views: dict, l: int) -> dict:
        """The layer-l slices of the per-layer parameter (or gradient) tensors."""
        out = {}
        for name, shape in self.shapes.items():
            if len(shape) >= 2 and name not in NOT_PER_LAYER:
                n = math.prod(shape[1:])
                out[name] = views[name][l * n:(l + 1) * n]
        return out

    def _layer_acts(self, views: dict, l: int) -> dict:
        """The layer-l slices of the per-layer activation tensors."""
        n_layers = self.config.num_layers
        out = {}
        for name, view in views.items():
            if name in ("encoded", "lnf", "lnf_mean", "lnf_rstd", "logits", "probs", "losses"):
                continue
            n = view.size // n_layers
            out[name] = view[l * n:(l + 1) * n]
        return out


class HostDecoding(LanguageModel):
    """KV-cache decoding with the CPU kernels (cllm/kernels/decode.py). Subclasses set `_weight_views`
    (the parameters in ModelConfig.param_shapes's order, flat) and `_scales` (None for float weights;
    cllm/quantize.py's Int8Model passes its int8 matrices in _weight_views and their row scales here)."""

    _host_rope = None  # llama's (cos, sin) for the decoding kernels, host arrays built on first use

    def new_kv_cache(self, num_sequences: int = 1) -> np.ndarray:
        """A KV cache for decode_step, flat: per sequence and layer, gpt2: each head's keys (hs, maxT), then
        each head's values (maxT, hs); llama: the NKV kv heads' keys (NKV, maxT, hs), then their values
        (cllm/kernels/decode.py)."""
        return np.zeros(self.config.kv_cache_size(num_sequences), dtype=self.dtype)

    def kv_positions(self, kv_cache: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
        """Views of a one-sequence cache's positions 0..n-1: every float of their keys and values and nothing
        else (the server's prefix cache copies a prompt's n positions, not the whole context's cache:
        cllm/serve/batcher.py). gpt2: the keys (L, NH, hs, n) and the values (L, NH, n, hs); llama: both
        (L, 2, NKV, n, hs)."""
        cfg = self.config
        L, hs, maxT = cfg.num_layers, cfg.head_size, cfg.max_seq_len
        if cfg.arch == "llama":
            return (kv_cache.reshape(L, 2, cfg.num_kv_heads, maxT, hs)[:, :, :, :n],)
        blocks = kv_cache.reshape(L, 2, cfg.num_heads, maxT * hs)
        keys = blocks[:, 0].reshape(L, cfg.num_heads, hs, maxT)[..., :n]
        values = blocks[:, 1].reshape(L, cfg.num_heads, maxT, hs)[:, :, :n]
        return keys, values

    def _host_rope_tables(self) -> tuple[np.ndarray, np.ndarray]:
        if self._host_rope is None:
            self._host_rope = rope_tables(self.config, self.dtype)
        return self._host_rope

    def _llama_rows(self, tokens, B: int, T: int, pos0: int, kv_cache: np.ndarray, first_logit_row: int):
        """cllm/kernels/decode.llama_forward_rows over this model's weights: logits (R - first_logit_row, V)."""
        cfg = self.config
        w = dict(zip(self.shapes, self._weight_views))
        head, head_scale = (w["wte"], 0) if cfg.tie_embeddings else (w["lm_head"], 5)
        logits = np.empty((B * T - first_logit_row) * cfg.vocab_size, dtype=self.dtype)
        cos, sin = self._host_rope_tables()
        K.llama_forward_rows(logits, kv_cache, tokens, w["wte"], w["ln1w"], w["qkvw"], w.get("qkvb"), w["attprojw"],
                             w["ln2w"], w["fcw"], w["fcprojw"], w["lnfw"], head, head_scale, cos, sin, self._scales,
                             B, T, pos0, cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_dim,
                             cfg.max_seq_len, cfg.vocab_size, cfg.norm_eps, first_logit_row,
                             cfg.activation == "relu2", cfg.qk_norm, float(cfg.logit_softcap))
        return logits

    def decode_step(self, tokens, pos: int, kv_cache: np.ndarray) -> np.ndarray:
        """Feed tokens (nb,) at position pos (every earlier position already in kv_cache) and
        return the next-token logits (nb, V); O(pos) attention work per token, not O(pos^2)."""
        cfg = self.config
        tokens = self._decode_tokens(tokens, pos, kv_cache)
        nb = tokens.size
        if cfg.arch == "llama":
            return self._llama_rows(tokens, nb, 1, pos, kv_cache, 0).reshape(nb, cfg.vocab_size)
        logits = np.empty(nb * cfg.vocab_size, dtype=self.dtype)
        K.decode_step(logits, kv_cache, tokens, pos, *self._weight_views, self._scales, nb, cfg.num_layers,
                      cfg.embed_dim, cfg.num_heads, cfg.max_seq_len, cfg.vocab_size)
        return logits.reshape(nb, cfg.vocab_size)

    def decode_batch(self, tokens, positions, kv_cache: np.ndarray, slots=None) -> np.ndarray:
        """LanguageModel.decode_batch: one step of B sequences at their own positions, in one pass over the
        weights (cllm/kernels/decode.py decode_batch; llama_forward_rows with per-row positions)."""
        cfg = self.config
        tokens, positions, slots = self._batch_inputs(tokens, positions, kv_cache, slots)
        B = tokens.size
        if cfg.arch == "llama":
            w = dict(zip(self.shapes, self._weight_views))
            head, head_scale = (w["wte"], 0) if cfg.tie_embeddings else (w["lm_head"], 5)
            logits = np.empty(B * cfg.vocab_size, dtype=self.dtype)
            cos, sin = self._host_rope_tables()
            K.llama_forward_rows(logits, kv_cache, tokens, w["wte"], w["ln1w"], w["qkvw"], w.get("qkvb"),
                                 w["attprojw"], w["ln2w"], w["fcw"], w["fcprojw"], w["lnfw"], head, head_scale, cos,
                                 sin, self._scales, B, 1, 0, cfg.num_layers, cfg.embed_dim, cfg.num_heads,
                                 cfg.num_kv_heads, cfg.ffn_dim, cfg.max_seq_len, cfg.vocab_size, cfg.norm_eps, 0,
                                 cfg.activation == "relu2", cfg.qk_norm, float(cfg.logit_softcap), slots, positions)
            return logits.reshape(B, cfg.vocab_size)
        logits = np.empty(B * cfg.vocab_size, dtype=self.dtype)
        decode_batch_kernel(logits, kv_cache, tokens, slots, positions, *self._weight_views, self._scales, B,
                            cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.max_seq_len, cfg.vocab_size)
        return logits.reshape(B, cfg.vocab_size)

    def prefill(self, tokens, pos0: int, kv_cache: np.ndarray) -> np.ndarray:
        """Feed one sequence's tokens (n,) at positions pos0..pos0+n-1 in one call (the earlier
        positions already in kv_cache, a cache for one sequence) and return the logits (V,) for the
        token after the last: what n decode steps give, with matrix products over all n rows."""
        cfg = self.config
        tokens = self._prefill_tokens(tokens, pos0, kv_cache)
        if cfg.arch == "llama":
            return self._llama_rows(tokens, 1, tokens.size, pos0, kv_cache, tokens.size - 1)
        logits = np.empty(cfg.vocab_size, dtype=self.dtype)
        K.prefill(logits, kv_cache, tokens, pos0, *self._weight_views, self._scales, cfg.num_layers,
                  cfg.embed_dim, cfg.num_heads, cfg.max_seq_len, cfg.vocab_size)
        return logits


class Model(GPTGraph, HostDecoding):
    """The model on the CPU (LanguageModel, cllm/model_interface.py): host buffers (the module's docstring),
    which it also offers writable as `params`, `grads`, `m`, `v` and tensor(name) (the CPU's own: other
    implementations read through *_to_host and write through load_*)."""

    def __init__(self, config: ModelConfig, seed: int | None = 0, dtype=np.float32):
        configure_threads()
        super().__init__(config, dtype)
        config.check_memory(training=False)  # the parameters: refuse before allocating them
        P = config.num_parameters()
        self.params = np.zeros(P, dtype=self.dtype)
        self.p = _carve(self.params, self.shapes)  # name -> flat parameter view
        # grads, m and v (P each) exist from their first use on, as in llm.c: generating, serving and
        # evaluating never hold them (a model 4x smaller in memory)
        self._training_buffers = None  # (grads, m, v) and their named views, once allocated
        # the parameter views in docs/design.md's order, as the decoding kernels take them: built once
        # (every writer fills the views in place), which saves ~5 us per generated token
        self._weight_views = tuple(self.p[name] for name in self.shapes)
        self._scales = None  # float weights; cllm/quantize.py's Int8Model passes its int8 scales here
        self.B = self.T = 0
        self.acts = self.grad_acts = None
        self.a = self.ga = {}  # name -> flat activation / activation-gradient view
        self.inputs = self.targets = None  # (B,T) int32 of the last forward
        self.drop, self.drop_key = 0, 0  # the last forward's dropout threshold and key (the backward's)
        self.mean_loss = None
        if seed is not None:
            self.init_weights(seed)

    # ---------------------------------------------------------------- gradients and AdamW moments
    def _training(self) -> dict:
        if self._training_buffers is None:
            self.config.check_memory(training=True)
            P = self.params.size
            bufs = {name: np.zeros(P, dtype=self.dtype) for name in ("grads", "m", "v")}
            views = {"g": _carve(bufs["grads"], self.shapes), "m_views": _carve(bufs["m"], self.shapes),
                     "v_views": _carve(bufs["v"], self.shapes)}
            self._training_buffers = {**bufs, **views}
        return self._training_buffers

    def _set_training(name: str):
        """A property for a training buffer: allocated on first read; assigning (`model.grads *= s`)
        writes into the buffer, whose views stay valid."""
        def get(self):
            return self._training()[name]

        def set_(self, value):
            buf = self._training()[name]
            if value is not buf:
                buf[...] = value
        return property(get, set_)

    grads = _set_training("grads")  # (P) gradients of the parameters
    m = _set_training("m")  # (P) AdamW first moments
    v = _set_training("v")  # (P) AdamW second moments
    g = property(lambda self: self._training()["g"])  # name -> flat gradient view
    m_views = property(lambda self: self._training()["m_views"])  # name -> first-moment view
    v_views = property(lambda self: self._training()["v_views"])  # name -> second-moment view
    del _set_training

    def has_training_buffers(self) -> bool:
        return self._training_buffers is not None

    # ---------------------------------------------------------------- parameters
    def init_weights(self, seed: int) -> None:
        """GPT-2 initialization (nanoGPT's, also for llama): N(0, 0.02) matrices (lm_head too), residual
        projections scaled by 1/sqrt(2L) (zero with zero_init_proj, as modded-nanogpt: each block starts as the
        identity), zero biases, unit LayerNorm / RMSNorm gains; the padded vocabulary rows of wte (and lm_head)
        stay zero."""
        rng = np.random.default_rng(seed)
        cfg = self.config
        self.params[:] = 0
        for name, shape in self.shapes.items():
            view = self.p[name]
            if name in MATRIX_PARAMS:
                std = 0.02 / math.sqrt(2 * cfg.num_layers) if name in RESIDUAL_PROJECTIONS else 0.02
                view[:] = rng.normal(0.0, std, size=view.size).astype(self.dtype)
                if name in RESIDUAL_PROJECTIONS and cfg.zero_init_proj:
                    view[:] = 0  # drawn all the same: the other tensors get the values they have without the option
            elif name in ("ln1w", "ln2w", "lnfw"):
                view[:] = 1
        V, C = cfg.vocab_size, cfg.embed_dim
        for name in ("wte", "lm_head"):
            if name in self.p:
                self.p[name][V * C:] = 0

    def tensor(self, name: str) -> np.ndarray:
        """A parameter as an array of its real shape (a view: writing to it changes the model)."""
        return self.p[name].reshape(self.shapes[name])

    def named_tensors(self) -> dict[str, np.ndarray]:
        return {name: read_only(self.tensor(name)) for name in self.shapes}

    def params_to_host(self) -> np.ndarray:
        return read_only(self.params)

    def load_params(self, params) -> None:
        self.params[:] = _flat_values(params, self.params.size, "params")

    def grads_to_host(self) -> np.ndarray:
        return read_only(self.grads)

    def load_grads(self, grads) -> None:
        self.grads[:] = _flat_values(grads, self.params.size, "grads")

    def moments_to_host(self) -> tuple[np.ndarray, np.ndarray]:
        return read_only(self.m), read_only(self.v)

    def memory_bytes(self) -> int:
        held = [self.params, self.acts, self.grad_acts]
        if self.has_training_buffers():
            held += [self.grads, self.m, self.v]
        return sum(b.nbytes for b in held if b is not None)

    def zero_grad(self) -> None:
        K.fill_inplace(self.grads, 0.0)

    # ---------------------------------------------------------------- activations
    def _ensure_activations(self, B: int, T: int) -> None:
        if (B, T) == (self.B, self.T):
            return
        self.config.check_batch(B, T, training=self.has_training_buffers())
        shapes = self.config.activation_shapes(B, T)
        A = self.config.num_activations(B, T)
        grad_shapes = self.config.grad_activation_shapes(B, T)  # one layer's, shared by all (cllm/config.py)
        self.acts = np.zeros(A, dtype=self.dtype)
        self.a = _carve(self.acts, shapes)
        self._grad_shapes = grad_shapes
        self.grad_acts, self.ga = None, {}  # allocated by the first backward at this (B,T)
        self.B, self.T = B, T

    # ---------------------------------------------------------------- forward / backward
    def forward(self, idx, targets=None, *, dropout: float = 0.0, dropout_key: int = 0):
        """LanguageModel.forward: the logits (B,T,V) are a view into the activation buffer that the next
        forward overwrites. dropout p > 0 zeroes, with masks drawn from dropout_key (cllm/kernels/dropout.py),
        the embeddings' sum, the attention probabilities and both residual projections' outputs."""
        idx, targets = self._check_batch(idx, targets)
        B, T = idx.shape
        self._ensure_activations(B, T)
        V, Vp = self.config.vocab_size, self.config.padded_vocab_size
        a = self.a
        self.inputs = idx.reshape(-1)
        self.drop, self.drop_key = dropout_threshold(dropout), dropout_key
        self._forward_graph(self.p, a, self.inputs, B, T)
        logits = a["logits"].reshape(B, T, Vp)[:, :, :V]
        if targets is None:
            self.targets = None
            self.mean_loss = None
            return logits
        self.targets = targets
        K.softmax_forward(a["probs"], a["logits"], B, T, V, Vp)
        K.crossentropy_forward(a["losses"], a["probs"], self.targets, B, T, Vp)
        self.mean_loss = self._mean_loss(a["losses"], self.targets)
        return logits, self.mean_loss

    def loss(self, idx, targets, *, dropout: float = 0.0, dropout_key: int = 0) -> float:
        return self.forward(idx, targets, dropout=dropout, dropout_key=dropout_key)[1]

    def token_losses(self) -> np.ndarray:
        """(B,T), 0 where the target was -1."""
        if self.mean_loss is None:
            raise RuntimeError(TOKEN_LOSSES_NEED_TARGETS)
        return read_only(self.a["losses"]).reshape(self.B, self.T)

    def backward(self, normalizer: float | None = None) -> None:
        """Accumulates d(mean loss)/d(params) into grads (call zero_grad() first for a fresh step); with a
        normalizer, d(sum of the unmasked token losses / normalizer) (LanguageModel.backward).
        One backward per forward, as in PyTorch: it turns the forward's probabilities into the logits'
        gradient in place, so a second one needs a new forward."""
        if self.targets is None:
            raise RuntimeError(BACKWARD_NEEDS_FORWARD)
        self._start_backward(normalizer)
        if self.grad_acts is None:
            self.grad_acts = np.zeros(sum(math.prod(v) for v in self._grad_shapes.values()), dtype=self.dtype)
            self.ga = _carve(self.grad_acts, self._grad_shapes)
        self._backward_graph(self.p, self.g, self.a, self.ga, self.inputs, self.targets, self.B, self.T)
        self.targets = None

    # ---------------------------------------------------------------- attention (GPTGraph's)
    def _attention_forward(self, al: dict, B: int, T: int, l: int) -> None:
        cfg = self.config
        K.attention_forward(al["atty"], al["att"], al["qkv"], B, T, cfg.embed_dim, cfg.num_heads, self.drop,
                            self._site_key(l, DROP_ATTENTION))

    def _attention_backward(self, gal: dict, al: dict, B: int, T: int, l: int) -> None:
        cfg = self.config
        K.attention_backward(gal["qkv"], gal["atty"], al["qkv"], al["att"], B, T, cfg.embed_dim, cfg.num_heads, True,
                             self.drop, self._site_key(l, DROP_ATTENTION))
