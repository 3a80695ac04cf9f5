"""Where the model runs: `--device cpu` (cllm/model.py) or `--device cuda` / `cuda:N` (CudaModel, here).

CudaModel holds the same flat buffers as Model (params, grads, AdamW moments, activations and their
gradients, carved into the same named views), but as device arrays that stay on the GPU for the
whole run, and calls the CUDA kernels of cllm/kernels/cuda. The host sees: the token ids going in (one
copy per forward), the (B,T) losses of a forward with targets, the gradient norm of each optimizer
step (8 bytes), the logits of each decoding step, and whole buffers only when a checkpoint is
written. Checkpoints do not know the device: `to_device` moves a loaded Model onto the GPU and
`CudaModel.to_host` back, so a run saved on one resumes on the other from the same files.

Without numba-cuda, or without a usable GPU, asking for cuda is a one-line error (DeviceError or
MissingDependencyError), never a quiet fall back to the CPU. With NUMBA_ENABLE_CUDASIM=1 (set before
numba.cuda is first imported) Numba's simulator stands in for the GPU: that is how the tests run.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from cllm.errors import CLLMError, ConfigError, MissingDependencyError
from cllm.model import BACKWARD_NEEDS_FORWARD, TOKEN_LOSSES_NEED_TARGETS, GPTGraph, Model, _carve, _flat_values
from cllm.optim import AdamW

# numba.cuda and cllm.kernels.cuda are imported inside the functions that need them (the lines marked
# "noqa: PLC0415" point here): numba-cuda is an optional extra, and NUMBA_ENABLE_CUDASIM must be set before
# numba.cuda's first import


class DeviceError(CLLMError):
    """The requested device cannot be used (no GPU, no driver, a GPU index out of range)."""


def parse_device(device: str) -> int | None:
    """None for 'cpu'; for 'cuda' -1 (the GPU of this process's local MPI rank); N for 'cuda:N'."""
    if device == "cpu":
        return None
    if device == "cuda":
        return -1
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


def _cuda():
    import importlib.util  # noqa: PLC0415 (optional, see the top)

    if importlib.util.find_spec("numba_cuda") is None:
        raise MissingDependencyError("--device cuda needs Numba's CUDA target; install it with: "
                                     "pip install -e '.[cuda]'")
    from numba import cuda  # noqa: PLC0415 (optional, see the top)

    return cuda


def select_gpu(device: str, local_rank: int = 0) -> int | None:
    """Check `device` and make its GPU current in this thread; returns its index (None for cpu).
    'cuda' takes the GPU numbered by the local MPI rank (0 without MPI)."""
    index = parse_device(device)
    if index is None:
        return None
    cuda = _cuda()
    try:
        usable = cuda.is_available()
        count = len(cuda.gpus) if usable else 0
    except (ImportError, RuntimeError, OSError) as exc:  # a broken driver install: the driver's loader raises
        raise DeviceError(f"--device {device}: no usable NVIDIA GPU ({exc}); use --device cpu") from None
    if not usable or count == 0:
        raise DeviceError(f"--device {device}: no usable NVIDIA GPU (no CUDA driver or device found); use --device cpu")
    gpu = local_rank if index == -1 else index
    if gpu >= count:
        raise DeviceError(f"--device {device}: GPU {gpu} does not exist ({count} GPU(s) here"
                          + (f"; local MPI rank {local_rank} takes GPU {local_rank})" if index == -1 else ")"))
    _bind(gpu)
    return gpu


def check_training_device(device: str, dropout: float, local_rank: int = 0) -> None:
    """Refuse, before any data is read, a training device that cannot run this configuration."""
    if select_gpu(device, local_rank) is not None and dropout:
        raise ConfigError("--dropout is not implemented on --device cuda yet; train with --dropout 0 or --device cpu")


def to_device(model: Model, device: str, local_rank: int = 0):
    """`model` itself for cpu; a CudaModel with its weights and moments for cuda / cuda:N."""
    gpu = select_gpu(device, local_rank)
    return model if gpu is None else CudaModel(model, gpu)


def optimizer_class(device: str):
    """AdamW for the CPU model, CudaAdamW (the same update on the device) for the CUDA one."""
    return AdamW if parse_device(device) is None else CudaAdamW


def average_gradients(model, comm, n: int) -> None:
    """model's gradients = their mean over the n micro-batches of every process (summed in place).
    The CUDA model's pass through the host for the Allreduce, which MPI needs there without a
    CUDA-aware MPI."""
    if isinstance(model, CudaModel):
        grads = model.grads_to_host()  # a host copy of its own
        comm.allreduce_sum_(grads)
        model.load_grads(grads * np.float32(1.0 / n))
        return
    comm.allreduce_sum_(model.grads)
    model.grads *= model.dtype.type(1.0 / n)


_thread = threading.local()  # the GPU made current in this thread (Numba's current device is per thread)


def _bind(gpu: int) -> None:
    """Make GPU `gpu` current in the calling thread: the server decodes on worker threads, which start
    with no current device (Numba would take GPU 0)."""
    if getattr(_thread, "gpu", None) != gpu:
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        cuda.select_device(gpu)
        _thread.gpu = gpu


class DeviceCache:
    """A KV cache on the device, with what Generator.beam_search does to its numpy caches: size,
    reshape, rows picked by index (a gather, device to device) and copy."""

    def __init__(self, array):
        self.array = array

    @property
    def size(self) -> int:
        return self.array.size

    def reshape(self, *shape) -> DeviceCache:
        return DeviceCache(self.array.reshape(*shape))

    def __getitem__(self, rows) -> DeviceCache:
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        rows = [int(r) for r in np.atleast_1d(rows)]
        out = cuda.device_array((len(rows), self.array.shape[1]), dtype=self.array.dtype)
        for i, r in enumerate(rows):
            out[i].copy_to_device(self.array[r])
        return DeviceCache(out)

    def copy(self) -> DeviceCache:
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        out = cuda.device_array(self.array.shape, dtype=self.array.dtype)
        out.copy_to_device(self.array)
        return DeviceCache(out)


class CudaModel(GPTGraph):
    """The model on a GPU (LanguageModel, cllm/model_interface.py; float32 only), built from a Model (its
    weights and moments). GPTGraph's graph calls cllm/kernels/cuda (self.ops) and this class's attention.
    p, g, m_views, v_views, a and ga are device views; the host reads through *_to_host (copies)."""

    def __init__(self, model: Model, gpu: int = 0):
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        import cllm.kernels.cuda as G  # noqa: PLC0415 (optional, see the top)

        if model.dtype != np.float32:
            raise ConfigError("the CUDA model runs in float32 only")
        if model.config.forward_options():  # cllm/kernels/cuda has no kernels for them
            raise ConfigError(f"{', '.join(model.config.forward_options())}: not implemented on --device cuda yet; "
                              "use --device cpu")
        super().__init__(model.config, np.float32)
        self.G = self.ops = G
        self.gpu = gpu
        self._params = cuda.to_device(model.params)
        P = model.params.size
        self._grads = cuda.device_array(P, dtype=np.float32)
        G.fill_inplace(self._grads, 0.0)
        # the moments: the host model's, unless it never allocated them (a model loaded to generate:
        # reading model.m would allocate P zeros on the host for nothing)
        if not model.has_training_buffers():
            self._m, self._v = cuda.device_array(P, dtype=np.float32), cuda.device_array(P, dtype=np.float32)
            G.fill_inplace(self._m, 0.0)
            G.fill_inplace(self._v, 0.0)
        else:
            self._m, self._v = cuda.to_device(model.m), cuda.to_device(model.v)
        self.p = _carve(self._params, self.shapes)
        self.g = _carve(self._grads, self.shapes)
        self.m_views = _carve(self._m, self.shapes)
        self.v_views = _carve(self._v, self.shapes)
        self._stats = cuda.device_array(1, dtype=np.float64)  # the gradient norm's square
        self._partials = cuda.device_array(G.NORM_BLOCKS, dtype=np.float64)
        L = self.config.num_layers
        if self.config.arch == "llama":  # cllm/kernels/cuda/decode.llama_forward_rows's weights
            names = ("ln1w", "qkvw", "qkvb", "attprojw", "ln2w", "fcw", "fcprojw")
            head = self.p["wte"] if self.config.tie_embeddings else self.p["lm_head"]
            self._decode_weights = (self.p["wte"], self.p["lnfw"], head)
        else:
            names = ("ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb", "fcprojw",
                     "fcprojb")
            self._decode_weights = (self.p["wte"], self.p["wpe"], self.p["lnfw"], self.p["lnfb"])
        self._decode_layers = [tuple(self._layer(self.p, l).get(n) for n in names) for l in range(L)]
        self._work = threading.local()  # decoding scratch per thread (the server decodes on several)
        self.B = self.T = 0
        self._acts = self._grad_acts = self._dscores = None
        self.a = self.ga = {}  # name -> activation / activation-gradient device view
        self._losses = None  # (B*T,) host losses of the last forward with targets
        self.mean_loss = None
        self._has_targets = False

    # ---------------------------------------------------------------- buffers, read and written from the host
    def params_to_host(self) -> np.ndarray:
        return self._params.copy_to_host()

    def load_params(self, params) -> None:
        _bind(self.gpu)
        self._params.copy_to_device(np.ascontiguousarray(_flat_values(params, self._params.size, "params"),
                                                         dtype=np.float32))

    def grads_to_host(self) -> np.ndarray:
        return self._grads.copy_to_host()

    def load_grads(self, grads) -> None:
        _bind(self.gpu)
        self._grads.copy_to_device(np.ascontiguousarray(_flat_values(grads, self._grads.size, "grads"),
                                                        dtype=np.float32))

    def moments_to_host(self) -> tuple[np.ndarray, np.ndarray]:
        return self._m.copy_to_host(), self._v.copy_to_host()

    def named_tensors(self) -> dict[str, np.ndarray]:
        """Host copies of the parameters, of their real shapes (what checkpoints write)."""
        host = _carve(self.params_to_host(), self.shapes)
        return {name: host[name].reshape(shape) for name, shape in self.shapes.items()}

    def memory_bytes(self) -> int:
        held = (self._params, self._grads, self._m, self._v, self._acts, self._grad_acts, self._dscores)
        return sum(b.nbytes for b in held if b is not None)

    def to_host(self) -> Model:
        """A CPU Model with these weights and AdamW moments."""
        model = Model(self.config, seed=None)
        model.params[:] = self.params_to_host()
        model.m[:], model.v[:] = self.moments_to_host()
        return model

    def zero_grad(self) -> None:
        _bind(self.gpu)
        self.G.fill_inplace(self._grads, 0.0)

    # ---------------------------------------------------------------- training
    def _ensure_activations(self, B: int, T: int) -> None:
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        if (B, T) == (self.B, self.T):
            return
        self.config.check_batch(B, T, training=True)
        shapes = self.config.activation_shapes(B, T)
        grad_shapes = self.config.grad_activation_shapes(B, T)  # one layer's, shared (cllm/config.py)
        A = self.config.num_activations(B, T)
        self._acts = cuda.device_array(A, dtype=np.float32)
        self._grad_acts = cuda.device_array(sum(math.prod(v) for v in grad_shapes.values()), dtype=np.float32)
        if self.config.arch == "gpt2":  # attention's dS (llama's GQA kernel keeps its own)
            self._dscores = cuda.device_array(B * self.config.num_heads * T * T, dtype=np.float32)
        self.a = _carve(self._acts, shapes)
        self.ga = _carve(self._grad_acts, grad_shapes)
        self.B, self.T = B, T

    def forward(self, idx, targets=None, *, dropout: float = 0.0, dropout_key: int = 0):
        """LanguageModel.forward: the logits (B,T,V) are copied to the host (use loss() when only the loss
        is needed). No dropout on the device yet: dropout must be 0 (dropout_key is then unused)."""
        self._forward(idx, targets, dropout)
        B, T, V, Vp = self.B, self.T, self.config.vocab_size, self.config.padded_vocab_size
        logits = self.a["logits"].copy_to_host().reshape(B, T, Vp)[:, :, :V]
        return logits if targets is None else (logits, self.mean_loss)

    def loss(self, idx, targets, *, dropout: float = 0.0, dropout_key: int = 0) -> float:
        self._forward(idx, targets, dropout)
        return self.mean_loss

    def token_losses(self) -> np.ndarray:
        if self.mean_loss is None:
            raise RuntimeError(TOKEN_LOSSES_NEED_TARGETS)
        return self._losses.reshape(self.B, self.T).copy()

    def _forward(self, idx, targets, dropout: float) -> None:
        """The forward on the device; with targets, the losses come to the host (the one small copy out)."""
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        if dropout:
            raise ConfigError("dropout is not implemented on the CUDA device yet")
        _bind(self.gpu)
        G = self.G
        idx, targets = self._check_batch(idx, targets)
        B, T = idx.shape
        host_ids = idx.reshape(-1) if targets is None else np.concatenate([idx.reshape(-1), targets])
        self._ensure_activations(B, T)
        ids = cuda.to_device(host_ids)  # the one copy in: inputs, then targets
        self._inputs, self._targets = ids[:B * T], ids[B * T:]
        cfg = self.config
        V, Vp = cfg.vocab_size, cfg.padded_vocab_size
        a = self.a
        self._forward_graph(self.p, a, self._inputs, B, T)
        self._has_targets = targets is not None
        if targets is None:
            self.mean_loss = None
            return
        G.softmax_forward(a["probs"], a["logits"], B, T, V, Vp)
        G.crossentropy_forward(a["losses"], a["probs"], self._targets, B, T, Vp)
        self._losses = a["losses"].copy_to_host()
        self.mean_loss = self._mean_loss(self._losses, targets)  # over the targets that are not -1

    def backward(self, normalizer: float | None = None) -> None:
        """Accumulates d(mean loss)/d(params) into the device's grads, as Model.backward (normalizer too)."""
        if not self._has_targets:
            raise RuntimeError(BACKWARD_NEEDS_FORWARD)
        self._start_backward(normalizer)
        _bind(self.gpu)
        self._backward_graph(self.p, self.g, self.a, self.ga, self._inputs, self._targets, self.B, self.T)
        self._has_targets = False

    def _attention_forward(self, al: dict, B: int, T: int, l: int) -> None:
        cfg = self.config
        self.G.attention_forward(al["atty"], al["att"], al["qkv"], B, T, cfg.embed_dim, cfg.num_heads)

    def _attention_backward(self, gal: dict, al: dict, B: int, T: int, l: int) -> None:
        # the scores' gradient goes through a scratch buffer that the keys' pass reads (cllm/kernels/cuda/attention.py)
        cfg = self.config
        self.G.attention_backward(gal["qkv"], self._dscores, gal["atty"], al["qkv"], al["att"], B, T, cfg.embed_dim,
                                  cfg.num_heads, True)

    def _to_ops(self, array: np.ndarray):
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        return cuda.to_device(array)

    def grad_norm(self) -> float:
        """The global L2 norm of the gradients: reduced on the device, 8 bytes copied back."""
        _bind(self.gpu)
        self.G.grad_norm_squared(self._stats, self._grads, self._partials)
        return math.sqrt(float(self._stats.copy_to_host()[0]))

    # ---------------------------------------------------------------- incremental decoding
    def new_kv_cache(self, num_sequences: int = 1) -> DeviceCache:
        """A zeroed KV cache on the device, in Model.new_kv_cache's layout."""
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        _bind(self.gpu)
        cfg = self.config
        cache = cuda.device_array(cfg.kv_cache_size(num_sequences), dtype=np.float32)
        self.G.fill_inplace(cache, 0.0)
        return DeviceCache(cache)

    def _scratch(self, R: int, batched: bool = False) -> dict:
        """Work buffers for R rows; llama's batched step (decode_batch) also needs attention scores."""
        cache = getattr(self._work, "by_rows", None)
        if cache is None:
            cache = self._work.by_rows = {}
        key = (R, batched)
        if key not in cache:
            cfg = self.config
            if cfg.arch == "llama":
                cache[key] = self.G.llama_scratch(R, cfg.embed_dim, cfg.qkv_dim, cfg.ffn_dim,
                                                  *((cfg.num_heads, cfg.max_seq_len) if batched else ()))
            else:
                cache[key] = self.G.scratch(R, cfg.embed_dim, cfg.num_heads, cfg.max_seq_len)
        return cache[key]

    def _llama_rows(self, tokens, B: int, T: int, pos0: int, cache: DeviceCache, n_logits: int) -> np.ndarray:
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        _bind(self.gpu)
        cfg = self.config
        logits = cuda.device_array(n_logits * cfg.vocab_size, dtype=np.float32)
        cos, sin = self._rope_tables()
        self.G.llama_forward_rows(logits, cache.array.reshape(-1), cuda.to_device(tokens), self._decode_weights,
                                  self._decode_layers, cos, sin, self._scratch(B * T), B, T, pos0, cfg.num_layers,
                                  cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_dim, cfg.max_seq_len,
                                  cfg.vocab_size, cfg.norm_eps, B * T - n_logits)
        return logits.copy_to_host()

    def _run_rows(self, tokens, seq, positions, cache: DeviceCache, n_logits: int) -> np.ndarray:
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        _bind(self.gpu)
        cfg = self.config
        R = tokens.size
        rows = cuda.to_device(np.concatenate([tokens, seq, positions]).astype(np.int32))
        logits = cuda.device_array(n_logits * cfg.vocab_size, dtype=np.float32)
        self.G.forward_rows(logits, cache.array.reshape(-1), rows, self._decode_weights, self._decode_layers,
                            self._scratch(R), R, cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.max_seq_len,
                            cfg.vocab_size, R - n_logits)
        return logits.copy_to_host()

    def decode_step(self, tokens, pos: int, kv_cache: DeviceCache) -> np.ndarray:
        """As Model.decode_step: tokens (nb,) at position pos -> next-token logits (nb, V) on the host."""
        tokens = self._decode_tokens(tokens, pos, kv_cache)
        nb = tokens.size
        if self.config.arch == "llama":
            logits = self._llama_rows(tokens, nb, 1, pos, kv_cache, nb)
        else:
            logits = self._run_rows(tokens, np.arange(nb), np.full(nb, pos), kv_cache, nb)
        return logits.reshape(nb, self.config.vocab_size)

    def decode_batch(self, tokens, positions, kv_cache: DeviceCache, slots=None) -> np.ndarray:
        """As Model.decode_batch: B sequences at their own positions in their own slots of the cache, in one pass
        over the weights -> next-token logits (B, V) on the host."""
        from numba import cuda  # noqa: PLC0415 (optional, see the top)

        tokens, positions, slots = self._batch_inputs(tokens, positions, kv_cache, slots)
        cfg = self.config
        B = tokens.size
        if cfg.arch != "llama":
            return self._run_rows(tokens, slots, positions, kv_cache, B).reshape(B, cfg.vocab_size)
        _bind(self.gpu)
        rows = cuda.to_device(np.concatenate([tokens, slots, positions]).astype(np.int32))
        logits = cuda.device_array(B * cfg.vocab_size, dtype=np.float32)
        cos, sin = self._rope_tables()
        self.G.llama_forward_rows(logits, kv_cache.array.reshape(-1), None, self._decode_weights, self._decode_layers,
                                  cos, sin, self._scratch(B, batched=True), B, 1, 0, cfg.num_layers, cfg.embed_dim,
                                  cfg.num_heads, cfg.num_kv_heads, cfg.ffn_dim, cfg.max_seq_len, cfg.vocab_size,
                                  cfg.norm_eps, 0, rows)
        return logits.copy_to_host().reshape(B, cfg.vocab_size)

    def prefill(self, tokens, pos0: int, kv_cache: DeviceCache) -> np.ndarray:
        """As Model.prefill: one sequence's tokens at pos0.. in one pass -> the next token's logits (V,)."""
        tokens = self._prefill_tokens(tokens, pos0, kv_cache)
        if self.config.arch == "llama":
            return self._llama_rows(tokens, 1, tokens.size, pos0, kv_cache, 1)
        return self._run_rows(tokens, np.zeros(tokens.size), pos0 + np.arange(tokens.size), kv_cache, 1)


class CudaAdamW(AdamW):
    """AdamW's step (cllm/optim.py) on a CudaModel: the norm is reduced on the device (8 bytes come
    back), the clip scale and the update run there."""

    @property
    def kernels(self):
        import cllm.kernels.cuda as G  # noqa: PLC0415 (optional, see the top)

        return G

    def grad_norm(self, model: CudaModel) -> float:
        return model.grad_norm()

    def scale_grads(self, model: CudaModel, factor: float) -> None:
        model.G.scale_inplace(model._grads, factor)
