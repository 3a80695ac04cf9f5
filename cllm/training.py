"""The training loop: data -> tokenizer -> token dataset -> model -> AdamW steps, with evaluation,
samples, metrics, atomic checkpoints and exact resume.

A reader can hold it in their head: `train(cfg)` runs the pipeline; `Trainer.step()` is one
optimizer step on one random batch; everything else is bookkeeping around it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time

import numpy as np

from cllm.config import ModelConfig, option
from cllm.errors import CheckpointError, ConfigError, DataError, TrainingError
from cllm.schedule import BUDGET_POINTS, UNPLANNED, is_due, plan_run

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


# The model sizes a new run gets; TrainConfig keeps None for "not given" so that a resumed run can
# tell a flag the user typed (which must match the checkpoint) from one left at its default.
MODEL_DEFAULTS = {"embed_dim": 128, "num_layers": 4, "num_heads": 4, "seq_len": 64}


@dataclasses.dataclass
class TrainConfig:
    """Every flag of `cli.py train`: each field is a flag of the same name (dashes for underscores)
    with this default and this help line (cllm/commands/__init__.py derives the command line)."""
    data: str = option(DEFAULT_DATA, "a text file, a directory, a prepared dataset or a crawl's output")
    tokenizer: str = option("char", "char, word, bpe, wordpiece, or a tokenizer file to use as it is (CLLM's, HuggingFace's "
                                    "tokenizer.json, BERT's vocab.txt, GPT-2's vocab.json, *.tiktoken); a folder of "
                                    "images is read as images: cllm/vision")
    vocab_size: int | None = option(None, "ids in the vocabulary (none: word 8192, bpe 4096, char every character)")
    embed_dim: int | None = option(None, "C, the model's width", shown=MODEL_DEFAULTS["embed_dim"])
    num_layers: int | None = option(None, "L, transformer blocks", shown=MODEL_DEFAULTS["num_layers"])
    num_heads: int | None = option(None, "NH, attention heads (must divide --embed-dim)",
                                   shown=MODEL_DEFAULTS["num_heads"])
    seq_len: int | None = option(None, "T, tokens per training sequence; also the model's context length",
                                 shown=MODEL_DEFAULTS["seq_len"])
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
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay (matrices only)")
    grad_clip: float = option(5.0, "clip the global gradient norm to this (0: no clipping)")
    beta1: float = option(0.9, "AdamW's first-moment decay")
    beta2: float = option(0.999, "AdamW's second-moment decay")
    dropout: float = option(0.0, "probability of zeroing activations in training (embeddings, attention "
                                 "probabilities, residual projections, as nanoGPT); 0: off")
    epochs: float | None = option(None, "passes over the training split (none: 1, or as many steps as --max-time "
                                        "allows when it is given without --max-steps; fractions allowed)", shown=1.0)
    max_steps: int | None = option(None, "optimizer steps to run (none: from --epochs)")
    max_time: float | None = option(None, "stop after this many seconds of training; alone (no --max-steps, no "
                                          "--epochs) it sets the run's length and lays the schedule over it")
    eval_interval: int | None = option(None, "steps between validations over the whole validation split (none: "
                                             f"250, or {BUDGET_POINTS} spread over a --max-time budget)", shown=250)
    checkpoint_interval: int | None = option(None, "steps between checkpoints (none: 500, or at each validation of a "
                                                   "--max-time budget; a better validation loss also saves one)",
                                             shown=500)
    sample_interval: int = option(500, "steps between printed samples")
    sample_prompt: str = option("\n", "the text samples start from")
    sample_tokens: int = option(200, "tokens per printed sample")
    keep_last: int = option(3, "step checkpoints kept (besides best)")
    seed: int = option(1337, "random seed of the weights and the batches")
    resume: str | None = option(None, "continue a run in --checkpoint-dir: latest, best or a checkpoint path")
    # fine-tuning (e.g. GPT-2 from `cli.py import-hf`): that checkpoint's sizes and tokenizer, a fresh optimizer
    init_from: str | None = option(None, "start from this checkpoint's weights; its tokenizer encodes DATA "
                                         "(--tokenizer and --vocab-size are then ignored)")
    threads: int | None = option(None, "Numba threads (none: the machine's cores, shared among local ranks)")
    # where the model runs (cllm/device.py); cuda needs the [cuda] extra and an NVIDIA GPU
    device: str = option("cpu", "cpu, cuda (under MPI: the GPU of the local rank) or cuda:N")
    val_fraction: float = option(0.1, "share of the data held out for validation")
    checkpoint_dir: str = option("checkpoints/run", "the run's directory: checkpoints, metrics.jsonl, loss.png")
    image_size: int | None = option(None, "images: centre-crop and resize to S x S pixels (none: their one size)")
    grayscale: bool = option(False, "images: read them as grayscale (automatic when every image is)")
    palette: int = option(16, "images: k-means colours over sampled pixels, or grey levels for grayscale images")
    overwrite: bool = option(False, "replace a finished or unfinished run already in --checkpoint-dir")
    progress: bool = option(True, "show the progress bar")

    def validate(self) -> None:
        def positive(name, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value!r}")

        if self.tokenizer not in ("char", "word", "bpe", "wordpiece", "image") and not os.path.exists(self.tokenizer):
            raise ConfigError(f"--tokenizer must be char, word, bpe, wordpiece or a tokenizer file, "
                              f"got {self.tokenizer!r}")
        for name in ("vocab_size", "embed_dim", "num_layers", "num_heads", "seq_len", "max_steps", "max_time",
                     "threads", "epochs", "eval_interval", "checkpoint_interval"):
            positive(name, allow_none=True)
        for name in ("batch_size", "grad_accum", "learning_rate", "sample_interval", "keep_last"):
            positive(name)
        for name in ("batch_size", "grad_accum", "warmup_steps", "eval_interval", "checkpoint_interval", "sample_interval",
                     "keep_last", "seed", "sample_tokens"):
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
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must lie in [0, 1), got {self.dropout!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must lie in (0, 1), got {self.val_fraction!r}")

    def model_flags(self) -> dict:
        return {k: getattr(self, k) for k in MODEL_DEFAULTS}

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warmup over warmup_steps, then cosine decay to min_lr at total_steps (step from 0)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if total_steps <= cfg.warmup_steps:
        return cfg.learning_rate
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


class BatchSampler:
    """Random windows of T+1 tokens from a memory-mapped split, drawn from a seeded generator whose
    state is saved in checkpoints (the data position)."""

    def __init__(self, tokens: np.ndarray, B: int, T: int, seed: int, align: int = 1):
        if len(tokens) < T + 2:
            raise DataError(f"the training split has {len(tokens)} tokens, fewer than one window of "
                            f"--seq-len {T} + 1; use more data or a smaller --seq-len")
        self.tokens, self.B, self.T = tokens, B, T
        self.align = align  # windows start at multiples of align (an image model: one image per window)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        return self.next_global(1)[0]

    def next_global(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """n micro-batches (x, y), each (B,T), from one draw of n*B window starts. Every process
        draws the same global batch and takes its own micro-batches of it, so that 2 processes
        with batch B see exactly what 1 process with --grad-accum 2 sees."""
        if self.align == 1:
            starts = self.rng.integers(0, len(self.tokens) - self.T - 1, size=n * self.B)
        else:
            starts = self.rng.integers(0, (len(self.tokens) - 1) // self.align, size=n * self.B) * self.align
        window = np.stack([np.asarray(self.tokens[s:s + self.T + 1], dtype=np.int32) for s in starts])
        return [(window[i * self.B:(i + 1) * self.B, :-1], window[i * self.B:(i + 1) * self.B, 1:]) for i in range(n)]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def window_losses(model, tokens: np.ndarray, B: int, T: int):
    """The next-token losses (real windows, T) of every non-overlapping window of T+1 tokens of
    `tokens`, a batch of B windows at a time (deterministic; the last batch is padded with its first
    window, and the padding is not yielded)."""
    n_windows = (len(tokens) - 1) // T
    if n_windows == 0:
        raise DataError(f"the validation split has {len(tokens)} tokens, fewer than one window of "
                        f"{T} + 1; lower --val-fraction's denominator or --seq-len")
    for first in range(0, n_windows, B):
        idx = list(range(first, min(first + B, n_windows)))
        real = len(idx)
        idx += [idx[0]] * (B - real)
        window = np.stack([np.asarray(tokens[i * T:i * T + T + 1], dtype=np.int32) for i in idx])
        model.forward(window[:, :-1], window[:, 1:])
        yield model.a["losses"].reshape(B, T)[:real]


def evaluate_tokens(model, tokens: np.ndarray, B: int, T: int) -> float:
    """Mean next-token loss over every non-overlapping window of T+1 tokens of `tokens` (window_losses)."""
    total, count = 0.0, 0
    for losses in window_losses(model, tokens, B, T):
        total += float(losses.sum(dtype=np.float64))
        count += losses.size
    return total / count


def validation(model, tokenizer, tokens: np.ndarray, B: int, T: int) -> dict:
    """{"val_loss": ...} over the validation split; an image model's also has "val_bits_per_dim"."""
    if tokenizer.kind == "image":
        from cllm.vision import evaluate_records

        r = evaluate_records(model, tokens, tokenizer, B)
        return {"val_loss": r["loss"], "val_bits_per_dim": r["bits_per_dim"]}
    return {"val_loss": evaluate_tokens(model, tokens, B, T)}


def sample_text(model, tokenizer, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8) -> str:
    from cllm.completion import default_start_ids
    from cllm.generation import Generator, SamplingConfig

    ids = tokenizer.encode(prompt) or default_start_ids(tokenizer)
    gen = Generator(model, eos_id=tokenizer.eos_id)
    out = list(gen.stream(ids, SamplingConfig(max_new_tokens=n_tokens, temperature=temperature, top_k=0, seed=seed)))
    return tokenizer.decode(out)


def _say(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


class _StopFlag:
    """Ctrl-C asks the loop to stop after the current step (so a checkpoint is consistent);
    a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading_is_main():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _say("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def load_dataset(cfg: TrainConfig):
    """The prepared dataset for cfg.data: DATA itself when it is one, else prepared (and cached)
    under CHECKPOINT_DIR/dataset. Returns (tokenizer, train tokens, val tokens, dataset dir)."""
    from cllm.data import prepare_dataset, read_token_file
    from cllm.tokenizers import load_tokenizer

    data = cfg.data
    if not os.path.exists(data):
        raise DataError(f"no such file or directory: {data!r}")
    if os.path.isdir(data) and all(os.path.exists(os.path.join(data, f)) for f in ("meta.json", "train.bin", "val.bin", "tokenizer.json")):
        _say(f"[1/5] Using the prepared dataset {data}")
        tokenizer = load_tokenizer(os.path.join(data, "tokenizer.json"))
        init_tok = _init_tokenizer(cfg)
        if init_tok is not None and init_tok._to_dict() != tokenizer._to_dict():
            raise ConfigError(f"the prepared dataset {data} was encoded with another tokenizer than --init-from's "
                              "checkpoint; give the raw text instead")
        _say(f"[2/5] Tokenizer: {tokenizer.kind}, {tokenizer.vocab_size} tokens")
        return tokenizer, read_token_file(os.path.join(data, "train.bin")), read_token_file(os.path.join(data, "val.bin")), data
    _say(f"[1/5] Loading and cleaning {data}")
    out_dir = os.path.join(cfg.checkpoint_dir, "dataset")
    prepared = prepare_dataset(data, out_dir, tokenizer=_init_tokenizer(cfg) or cfg.tokenizer, vocab_size=cfg.vocab_size,
                               val_fraction=cfg.val_fraction, progress=cfg.progress,
                               image={"image_size": cfg.image_size, "grayscale": cfg.grayscale, "palette": cfg.palette})
    tokenizer = prepared.tokenizer
    _say(f"[2/5] Tokenizer: {tokenizer.kind}, {tokenizer.vocab_size} tokens")
    return tokenizer, read_token_file(prepared.train_path), read_token_file(prepared.val_path), out_dir


def _init_tokenizer(cfg: TrainConfig):
    """The tokenizer of --init-from's checkpoint (None without the flag)."""
    if not cfg.init_from:
        return None
    from cllm.checkpoint import load_checkpoint
    from cllm.tokenizers import load_tokenizer

    ckpt = load_checkpoint(cfg.init_from)
    if ckpt.tokenizer_path is None:
        raise CheckpointError(f"--init-from {cfg.init_from}: the checkpoint has no tokenizer to encode the data with")
    return load_tokenizer(ckpt.tokenizer_path)


def init_checkpoint(cfg: TrainConfig):
    """--init-from's checkpoint; the run takes its sizes (a size flag that differs is refused) and a
    --seq-len up to its context."""
    from cllm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(cfg.init_from)
    saved = ckpt.model_config
    for flag in ("embed_dim", "num_layers", "num_heads"):
        value = getattr(cfg, flag)
        if value is not None and value != getattr(saved, flag):
            raise ConfigError(f"--init-from {cfg.init_from} has {flag.replace('_', '-')} {getattr(saved, flag)}, not "
                              f"{value}; drop --{flag.replace('_', '-')}")
    cfg.embed_dim, cfg.num_layers, cfg.num_heads = saved.embed_dim, saved.num_layers, saved.num_heads
    cfg.seq_len = cfg.seq_len or min(MODEL_DEFAULTS["seq_len"], saved.max_seq_len)
    return ckpt


def train(cfg: TrainConfig) -> dict:
    """Run training; returns a summary dict (steps, losses, paths). Under mpirun, every rank runs
    this same function; rank 0 alone prepares the data, logs, samples and writes checkpoints."""
    from tqdm import tqdm

    from cllm import checkpoint as ck
    from cllm.device import average_gradients, check_training_device, optimizer_class, to_device
    from cllm.distributed import world
    from cllm.model import Model
    from cllm.runtime import configure_threads, cpu_count
    from kernels.dropout import derive_key

    cfg.validate()
    comm = world()
    check_training_device(cfg.device, cfg.dropout, comm.local_rank)  # before any data is read
    main = comm.is_main
    say = _say if main else (lambda msg: None)
    # ranks on one machine share its cores
    threads = configure_threads(cfg.threads or max(1, cpu_count() // comm.local_size))
    if not cfg.resume:  # check the model's sizes before any data is read
        sizes = {k: getattr(cfg, k) or v for k, v in MODEL_DEFAULTS.items()}
        ModelConfig(vocab_size=1, num_layers=sizes["num_layers"], num_heads=sizes["num_heads"],
                    embed_dim=sizes["embed_dim"], max_seq_len=sizes["seq_len"])
    ckdir = cfg.checkpoint_dir
    if main:
        try:
            os.makedirs(ckdir, exist_ok=True)
            probe = os.path.join(ckdir, f".write-test-{os.getpid()}")
            open(probe, "w").close()
            os.unlink(probe)
        except OSError as exc:
            raise CheckpointError(f"the checkpoint directory {ckdir!r} is not writable ({exc.strerror}); "
                                  "choose another --checkpoint-dir") from exc
        ck.remove_stale_temporaries(ckdir)
        if not cfg.resume:
            claim_run_directory(ckdir, cfg.overwrite, say)

    resume = None
    if cfg.resume:
        path = os.path.join(ckdir, cfg.resume) if cfg.resume in ("latest", "best") else cfg.resume
        resume = ck.load_checkpoint(path, with_optimizer=True)
        saved = resume.model_config
        tuned = bool(resume.train_config.get("init_from"))  # fine-tuning trains on a T below the model's context
        run_T = resume.train_config.get("seq_len") if tuned else saved.max_seq_len
        for flag, value in cfg.model_flags().items():
            have = run_T if flag == "seq_len" else getattr(saved, flag)
            if value is not None and value != have:
                raise ConfigError(f"cannot resume: the checkpoint has {flag.replace('_', '-')} {have} but "
                                  f"--{flag.replace('_', '-')} {value} was given; drop the flag or start a new "
                                  "--checkpoint-dir")
        cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.seq_len = saved.embed_dim, saved.num_layers, saved.num_heads, run_T
        if tuned:
            cfg.init_from = resume.path  # its data is encoded with the checkpoint's tokenizer
    init = init_checkpoint(cfg) if cfg.init_from and resume is None else None
    given_seq_len = cfg.seq_len  # None unless given: an image model's context is one image
    for flag, default in MODEL_DEFAULTS.items():
        if getattr(cfg, flag) is None:
            setattr(cfg, flag, default)

    # rank 0 prepares (or finds in its cache) the dataset; the others then read the same cache
    if main:
        tokenizer, train_tokens, val_tokens, dataset_dir = load_dataset(cfg)
    comm.barrier()
    if not main:
        tokenizer, train_tokens, val_tokens, dataset_dir = load_dataset(dataclasses.replace(cfg, progress=False))
    say(f"[3/5] Dataset: {len(train_tokens):,} training and {len(val_tokens):,} validation tokens ({dataset_dir})")
    if tokenizer.kind == "image":
        from cllm.vision import image_seq_len

        cfg.seq_len = image_seq_len(tokenizer, given_seq_len)
    B, T, K = cfg.batch_size, cfg.seq_len, cfg.grad_accum
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size, max_seq_len=T, num_layers=cfg.num_layers,
                               num_heads=cfg.num_heads, embed_dim=cfg.embed_dim)
    if cfg.init_from:  # the checkpoint's context may be longer than T (GPT-2's 1024 positions)
        model_config = (init or resume).model_config
    model_config.check_batch(B, T, training=True)
    optimizer = optimizer_class(cfg.device)(lr=cfg.learning_rate, beta1=cfg.beta1, beta2=cfg.beta2,
                                            weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip)
    sampler = BatchSampler(train_tokens, B, T, cfg.seed, align=T if tokenizer.kind == "image" else 1)
    if len(val_tokens) < T + 1:  # refused now rather than at the first evaluation, after training
        raise DataError(f"the validation split has {len(val_tokens)} tokens, fewer than one window of --seq-len {T} + 1; "
                        "use more data, a larger --val-fraction or a smaller --seq-len")
    step, best_val, elapsed_before = 0, math.inf, 0.0
    if resume is not None:
        if resume.model_config != model_config:
            raise ConfigError(f"cannot resume: the checkpoint's model ({resume.model_config}) differs from this "
                              f"run's ({model_config}); the tokenizer or data changed")
        model = ck.model_from_checkpoint(resume)
        state = resume.state
        step = int(state.get("step", 0))
        optimizer.t = int(state.get("optimizer_t", step))
        sampler.set_state(state["sampler_state"])
        best_val = float(state.get("best_val_loss") or math.inf)
        elapsed_before = float(state.get("elapsed_s", 0.0))
        say(f"[4/5] Model: resumed {resume.path} at step {step}")
        saved_world = int(state.get("world_size", 1))
        if saved_world != comm.size:
            say(f"note: this checkpoint was written by {saved_world} process(es) and resumes on {comm.size}; "
                "the global batch changes accordingly")
    elif init is not None:
        model = ck.model_from_checkpoint(init)  # weights only: AdamW's moments start at zero
        say(f"[4/5] Model: {model.num_parameters():,} parameters from {init.path}")
    else:
        model = Model(model_config, seed=cfg.seed)
        say(f"[4/5] Model: {model.num_parameters():,} parameters, {cfg.num_layers} layers, {cfg.num_heads} heads, "
            f"{cfg.embed_dim} dims, context {T}, vocab {tokenizer.vocab_size}")
    # every rank starts from rank 0's weights and moments
    for buffer in (model.params, model.m, model.v):
        comm.broadcast_(buffer)
    model = to_device(model, cfg.device, comm.local_rank)

    micro_batches = K * comm.size  # per optimizer step, over all processes
    tokens_per_step = micro_batches * B * T
    total_steps, planner = plan_run(cfg, len(train_tokens) / tokens_per_step, resume and resume.state, step)
    length = "steps to fill the time budget" if planner else total_steps
    say(f"[5/5] Training: {length} of {micro_batches} x {B} x {T} tokens "
        f"({comm.size} process(es) x {threads} thread(s), grad-accum {K})"
        + (f", at most {cfg.max_time:g} s" if cfg.max_time else ""))

    metrics_path = os.path.join(ckdir, "metrics.jsonl")
    if main:
        _truncate_metrics(metrics_path, step)
    train_json = cfg.to_json()

    def save(reason: str, val_loss: float | None):
        name = f"step_{step:06d}"
        state = {"step": step, "optimizer_t": optimizer.t, "sampler_state": sampler.state(),
                 "best_val_loss": None if best_val == math.inf else best_val, "val_loss": val_loss,
                 "elapsed_s": elapsed_before + (time.perf_counter() - t_start), "world_size": comm.size,
                 "dataset_dir": dataset_dir, "reason": reason, "planned_steps": planner and planner.planned}
        ck.save_checkpoint(ckdir, name, model, optimizer, tokenizer, train_json, state)
        ck.set_pointer(ckdir, "latest", name)
        if val_loss is not None and val_loss <= best_val:
            ck.set_pointer(ckdir, "best", name)
        ck.prune_checkpoints(ckdir, cfg.keep_last)

    t_start = time.perf_counter()
    last_saved = step if resume is not None else -1
    val_loss = None
    history = []
    stopped = False
    # summed over ranks each step: loss, stop requested, time up, rank 0's planned steps (time budget)
    flags = np.zeros(4, dtype=np.float64)
    bar = tqdm(total=None if total_steps == UNPLANNED else total_steps, initial=step,
               disable=not (cfg.progress and main), dynamic_ncols=True,
               unit="step", file=sys.stderr)
    with _StopFlag() as stop, open(metrics_path, "a") if main else _NullFile() as metrics:
        while step < total_steps:
            t0 = time.perf_counter()
            batches = sampler.next_global(micro_batches)[comm.rank * K:(comm.rank + 1) * K]
            model.zero_grad()
            local_loss = 0.0
            for k, (x, y) in enumerate(batches):  # gradients of K micro-batches add up in model.grads
                # dropout masks of this step and global micro-batch (so each rank's differ; 2 ranks
                # draw what --grad-accum 2 draws), the same again on resume (kernels/dropout.py)
                key = derive_key(cfg.seed, step, comm.rank * K + k)
                _, loss = model.forward(x, y, dropout=cfg.dropout, dropout_key=key)
                model.backward()
                local_loss += loss
            if micro_batches > 1:  # the mean over every micro-batch of every process
                average_gradients(model, comm, micro_batches)
            # one small collective carries the loss and the decisions every rank must share
            # a time budget counts the run's time before a resume too (cllm/schedule.py)
            took = time.perf_counter() - t_start + (elapsed_before if planner else 0.0)
            flags[:] = (local_loss, float(stop.requested), float(cfg.max_time is not None and took >= cfg.max_time),
                        planner.total if main and planner else 0.0)
            comm.allreduce_sum_(flags)
            loss = flags[0] / micro_batches
            if planner and int(flags[3]) != total_steps:
                total_steps = int(flags[3])
                bar.total = None if total_steps == UNPLANNED else total_steps
            lr = lr_at(step, cfg, total_steps)
            try:
                norm = optimizer.step(model, lr, loss)
            except TrainingError:
                bar.close()
                raise
            step += 1
            dt = time.perf_counter() - t0
            record = {"step": step, "train_loss": loss, "lr": lr, "grad_norm": norm,
                      "tokens_per_sec": tokens_per_step / dt, "elapsed_s": elapsed_before + time.perf_counter() - t_start}
            val_loss = None
            improved = False  # a new best validation loss is always saved, so `best` is never stale
            if main and planner:
                planner.reach(step, elapsed_before + time.perf_counter() - t_start)
            if main and (is_due(step, cfg.eval_interval, 250, planner) or step == total_steps):
                record.update(validation(model, tokenizer, val_tokens, B, T))
                val_loss = record["val_loss"]
                improved = val_loss < best_val
                best_val = min(best_val, val_loss)
            if main and planner:
                planner.after_step(step, elapsed_before + time.perf_counter() - t_start)
                record["planned_steps"] = planner.planned
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", val=f"{val_loss:.4f}" if val_loss is not None else "-",
                            lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_sec']:.0f}", refresh=False)
            if main and cfg.sample_interval and step % cfg.sample_interval == 0:
                text = sample_text(model, tokenizer, cfg.sample_prompt, cfg.sample_tokens, seed=cfg.seed + step)
                bar.write(f"--- sample at step {step} ---\n{cfg.sample_prompt}{text}\n---", file=sys.stderr)
            interval = is_due(step, cfg.checkpoint_interval, 500, planner)
            if main and (interval or improved):
                save("interval" if interval else "best", val_loss)
                last_saved = step
            if flags[1] > 0:
                stopped = True
                break
            if flags[2] > 0:
                say(f"--max-time {cfg.max_time:g} s reached at step {step}")
                break
        bar.close()
        if main and val_loss is None and step > 0 and (not history or "val_loss" not in history[-1]):
            record = {"step": step, **validation(model, tokenizer, val_tokens, B, T),
                      "elapsed_s": elapsed_before + time.perf_counter() - t_start}
            val_loss = record["val_loss"]
            best_val = min(best_val, val_loss)
            metrics.write(json.dumps(record) + "\n")
        if main and step != last_saved:
            save("interrupt" if stopped else "end", val_loss)
    comm.barrier()  # nobody leaves before rank 0 has written the final checkpoint
    elapsed = time.perf_counter() - t_start
    trained_tokens = len(history) * tokens_per_step
    summary = {"steps": step, "final_train_loss": history[-1]["train_loss"] if history else None,
               "val_loss": val_loss, "best_val_loss": None if best_val == math.inf else best_val,
               "elapsed_s": elapsed, "tokens_per_sec": trained_tokens / elapsed if elapsed > 0 else 0.0,
               "checkpoint": os.path.join(ckdir, "latest"), "interrupted": stopped}
    say(f"done: {step} steps, val loss {val_loss if val_loss is not None else float('nan'):.4f}, "
        f"{summary['tokens_per_sec']:.0f} tokens/s, {elapsed:.1f} s; checkpoint {summary['checkpoint']}")
    if main:
        plot_losses(metrics_path, os.path.join(ckdir, "loss.png"))
    return summary


def claim_run_directory(ckdir: str, overwrite: bool, say) -> None:
    """A new run never mixes with an old one: refuse a directory that holds a run, or with
    --overwrite delete that run first (only its own files: checkpoints, links, metrics, plot, dataset)."""
    from cllm import checkpoint as ck

    held = ck.describe_run(ckdir)
    if held is None:
        return
    if not overwrite:
        raise CheckpointError(f"{ckdir} already holds {held}; continue it with --resume latest, start a new run "
                              f"with another --checkpoint-dir, or replace it with --overwrite")
    say(f"--overwrite: deleting {held} in {ckdir}")
    ck.remove_run(ckdir)


class _NullFile:
    """Stands in for metrics.jsonl on ranks other than 0."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text):
        pass

    def flush(self):
        pass


def _truncate_metrics(path: str, step: int) -> None:
    """On resume, drop the metrics logged after the checkpoint's step (they will be logged again)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:
                continue
    from cllm.fileio import atomic_write_text

    atomic_write_text(path, "".join(keep))


def plot_losses(metrics_path: str, png_path: str) -> bool:
    """A loss-curve PNG when matplotlib (the [plot] extra) is installed; returns whether it was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps, losses, vsteps, vlosses = [], [], [], []
    with open(metrics_path) as f:
        for line in f:
            rec = json.loads(line)
            if "train_loss" in rec:
                steps.append(rec["step"])
                losses.append(rec["train_loss"])
            if "val_loss" in rec:
                vsteps.append(rec["step"])
                vlosses.append(rec["val_loss"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, label="train", linewidth=0.8)
    if vsteps:
        ax.plot(vsteps, vlosses, "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    from cllm.fileio import atomic_open

    with atomic_open(png_path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return True


def build_config(given: dict) -> TrainConfig:
    """A TrainConfig from the flags the user gave. With --resume, the checkpoint's own training
    config is the base (so that `train --resume latest` continues the same run: same data,
    tokenizer and schedule) and the given flags override it."""
    from cllm import checkpoint as ck

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
