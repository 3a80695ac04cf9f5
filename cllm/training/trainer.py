"""The training run: Trainer(cfg) sets it up, Trainer.run() is the loop.

    get a batch -> forward/backward (K micro-batches) -> share loss and decisions over the ranks ->
    optimizer step -> log -> evaluate -> sample -> save -> stop?

Under mpirun every rank runs the same Trainer; rank 0 alone prepares the data, logs, samples and
writes checkpoints (`self.main`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time

import numpy as np

from cllm import checkpoint as ck
from cllm import kinds
from cllm.config import ModelConfig
from cllm.device import average_gradients, check_training_device, optimizer_class, to_device
from cllm.distributed import world
from cllm.errors import CheckpointError, ConfigError, DataError
from cllm.kernels.dropout import derive_key
from cllm.model import Model
from cllm.optim import Muon
from cllm.runtime import configure_threads, cpu_count
from cllm.schedule import CHECKPOINT_INTERVAL, EVAL_INTERVAL, UNPLANNED, is_due, lr_at, plan_run
from cllm.training.average import ONLINE_WEIGHTS, WeightAverage
from cllm.training.config import TrainConfig
from cllm.training.data import BatchSampler, load_dataset
from cllm.training.evaluation import sample_text, validation
from cllm.training.logbook import Logbook, say
from cllm.training.start import init_checkpoint, open_run_directory, resume_checkpoint, settle_sizes


def train(cfg: TrainConfig) -> dict:
    """Run training; returns a summary dict (steps, losses, paths)."""
    return Trainer(cfg).run()


class Trainer:
    def __init__(self, cfg: TrainConfig):
        cfg.validate()
        self.cfg, self.comm = cfg, world()
        check_training_device(cfg.device, cfg.dropout, self.comm.local_rank)  # before any data is read
        self.main = self.comm.is_main
        self.say = say if self.main else (lambda msg: None)
        # ranks on one machine share its cores
        self.threads = configure_threads(cfg.threads or max(1, cpu_count() // self.comm.local_size))
        self.given_sizes = settle_sizes(cfg)  # before any data is read
        if self.main:
            open_run_directory(cfg)
        resume = resume_checkpoint(cfg, self.given_sizes) if cfg.resume else None
        if resume is not None and resume.optimizer != cfg.optimizer:
            raise ConfigError(f"cannot resume: the checkpoint was trained with --optimizer {resume.optimizer} "
                              f"but --optimizer {cfg.optimizer} was given; drop the flag or start a new "
                              "--checkpoint-dir")
        init = init_checkpoint(cfg, self.given_sizes) if cfg.init_from and resume is None else None
        self._load_data()
        self._build_model(resume, init)
        self.micro_batches = cfg.grad_accum * self.comm.size  # per optimizer step, over all processes
        self.tokens_per_step = self.micro_batches * self.B * self.T
        steps_per_epoch = len(self.train_tokens) / self.tokens_per_step
        self.total_steps, self.planner = plan_run(cfg, steps_per_epoch, resume and resume.state, self.step)
        length = "steps to fill the time budget" if self.planner else self.total_steps
        self.say(
            f"[5/5] Training: {length} of {self.micro_batches} x {self.B} x {self.T} tokens "
            f"({self.comm.size} process(es) x {self.threads} thread(s), grad-accum {cfg.grad_accum})"
            + (f", at most {cfg.max_time:g} s" if cfg.max_time else "")
        )
        self.last_saved = self.step if resume is not None else -1
        self.val_loss, self.history, self.stopped = None, [], False

    # ---------------------------------------------------------------- setup
    def _load_data(self) -> None:
        """Rank 0 prepares (or finds in its cache) the dataset; the others then read the same cache."""
        cfg = self.cfg
        if self.main:
            loaded = load_dataset(cfg)
        self.comm.barrier()
        if not self.main:
            loaded = load_dataset(dataclasses.replace(cfg, progress=False))
        self.tokenizer, self.train_tokens, self.val_tokens, self.dataset_dir = loaded
        self.say(
            f"[3/5] Dataset: {len(self.train_tokens):,} training and {len(self.val_tokens):,} validation "
            f"tokens ({self.dataset_dir})"
        )
        self.kind = kinds.for_data(self.train_tokens, self.tokenizer)  # text, image or chat (cllm/kinds.py)
        cfg.seq_len = self.kind.seq_len(self.tokenizer, self.given_sizes["seq_len"]) or cfg.seq_len
        self.B, self.T = cfg.batch_size, cfg.seq_len
        if len(self.val_tokens) == 0:  # refused now rather than at the first evaluation, after training
            raise DataError("the validation split is empty; use a larger --val-fraction or more data")
        # the same for a window of a token stream (a kind with its own sampler, chat, pads short windows)
        if self.kind.sampler is None and len(self.val_tokens) < self.T + 1:
            raise DataError(
                f"the validation split has {len(self.val_tokens)} tokens, fewer than one window of "
                f"--seq-len {self.T} + 1; use more data, a larger --val-fraction or a smaller --seq-len"
            )

    def _build_model(self, resume, init) -> None:
        """A new model, the resumed one (with its optimizer and data position) or --init-from's weights;
        every rank then holds rank 0's weights and moments, on the run's device."""
        cfg, B, T = self.cfg, self.B, self.T
        config = ModelConfig(
            vocab_size=self.tokenizer.vocab_size,
            max_seq_len=T,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            embed_dim=cfg.embed_dim,
            **cfg.arch_flags(),
        )
        if cfg.init_from:  # the checkpoint's context may be longer than T (GPT-2's 1024 positions)
            config = (init or resume).model_config
        config.check_batch(B, T, training=True)
        adamw = dict(lr=cfg.learning_rate, beta1=cfg.beta1, beta2=cfg.beta2, weight_decay=cfg.weight_decay,
                     grad_clip=cfg.grad_clip)
        if cfg.optimizer == "muon":  # the CPU's only (TrainConfig.validate refuses another device)
            self.optimizer = Muon(**adamw, muon_lr=cfg.muon_lr, momentum=cfg.muon_momentum)
        else:
            self.optimizer = optimizer_class(cfg.device)(**adamw)
        self.sampler = (self.kind.sampler or BatchSampler)(self.train_tokens, B, T, cfg.seed,
                                                           align=self.kind.align(self.tokenizer))
        self.step, self.best_val, self.elapsed_before = 0, math.inf, 0.0
        if resume is not None:
            model = self._resume(resume, config)
        elif init is not None:
            model = ck.model_from_checkpoint(init)  # weights only: AdamW's moments start at zero
            self.say(f"[4/5] Model: {model.num_parameters():,} parameters from {init.path}")
        else:
            model = Model(config, seed=cfg.seed)
            kv = f" ({config.num_kv_heads} kv)" if config.num_kv_heads != config.num_heads else ""
            self.say(
                f"[4/5] Model: {model.num_parameters():,} parameters, {config.arch}, {cfg.num_layers} layers, "
                f"{cfg.num_heads} heads{kv}, {cfg.embed_dim} dims, context {T}, vocab {self.tokenizer.vocab_size}"
            )
        if resume is not None:
            self.optimizer.load_state(resume.optimizer_state, model)
        self.average = self._weight_average(model, resume)
        # every rank starts from rank 0's weights and optimizer state; the steps then keep them equal, as
        # each rank steps on the same all-reduced gradients (Muon orthogonalizes identical momenta)
        for buffer in (model.params, model.m, model.v, *self.optimizer.state_tensors(model).values(),
                       *([self.average.average] if self.average else [])):
            self.comm.broadcast_(buffer)
        self.model = to_device(model, cfg.device, self.comm.local_rank)

    def _weight_average(self, model, resume) -> WeightAverage | None:
        """--ema-decay's average (cllm/training/average.py). A checkpoint that kept one holds it as its weights
        and the optimizer's weights apart: the model takes those back, and the average starts where it was."""
        online = resume.optimizer_state.get(ONLINE_WEIGHTS) if resume is not None else None
        if online is not None:
            if online.shape != (model.params.size,):
                raise CheckpointError(f"the checkpoint's {ONLINE_WEIGHTS} does not match the model "
                                      f"({model.params.size} values)")
            average = np.array(model.params, copy=True)
            model.params[:] = online
            if not self.cfg.ema_decay:
                self.say("note: --ema-decay 0: training goes on from the weights the optimizer stepped, "
                         "without the average the checkpoint holds")
                return None
            return WeightAverage(self.cfg.ema_decay, average)
        return WeightAverage(self.cfg.ema_decay, model.params) if self.cfg.ema_decay else None

    def averaged(self):
        """A block in which the model computes with the weight average (a no-op without --ema-decay)."""
        return self.average.swapped_in(self.model) if self.average else contextlib.nullcontext()

    def _resume(self, resume, config: ModelConfig):
        if resume.model_config != config:
            raise ConfigError(
                f"cannot resume: the checkpoint's model ({resume.model_config}) differs from this "
                f"run's ({config}); the tokenizer or data changed"
            )
        state = resume.state
        self.step = int(state.get("step", 0))
        self.optimizer.t = int(state.get("optimizer_t", self.step))
        self.sampler.set_state(state["sampler_state"])
        self.best_val = float(state.get("best_val_loss") or math.inf)
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.say(f"[4/5] Model: resumed {resume.path} at step {self.step}")
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.comm.size:
            self.say(
                f"note: this checkpoint was written by {saved_world} process(es) and resumes on "
                f"{self.comm.size}; the global batch changes accordingly"
            )
        return ck.model_from_checkpoint(resume)

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict:
        cfg = self.cfg
        self.t_start = time.perf_counter()
        self.log = Logbook(
            cfg.checkpoint_dir,
            self.main,
            cfg.progress,
            self.step,
            None if self.total_steps == UNPLANNED else self.total_steps,
        )
        with StopFlag() as stop:
            try:
                while self.step < self.total_steps:
                    t0 = time.perf_counter()
                    local_loss = self.forward_backward()
                    loss, stop_now, time_up = self.share(local_loss, stop)
                    lr = lr_at(self.step, cfg, self.total_steps)
                    norm = self.optimizer.step(self.model, lr, loss)
                    self.step += 1
                    if self.average:
                        self.average.update(self.model, self.step)
                    record = {
                        "step": self.step,
                        "train_loss": loss,
                        "lr": lr,
                        "grad_norm": norm,
                        "tokens_per_sec": self.tokens_per_step / (time.perf_counter() - t0),
                        "elapsed_s": self.elapsed(),
                    }
                    improved = self.evaluate(record)
                    self.log.write(record)
                    self.history.append(record)
                    self.log.show(record)
                    if self.main and cfg.sample_interval and self.step % cfg.sample_interval == 0:
                        self.sample()
                    interval = is_due(self.step, cfg.checkpoint_interval, CHECKPOINT_INTERVAL, self.planner)
                    if self.main and (interval or improved):  # a new best is always saved: `best` is never stale
                        self.save("interval" if interval else "best")
                    if stop_now:
                        self.stopped = True
                        break
                    if time_up:
                        self.say(f"--max-time {cfg.max_time:g} s reached at step {self.step}")
                        break
                self.log.bar.close()
                self.finish()
            finally:
                self.log.close()
        self.comm.barrier()  # nobody leaves before rank 0 has written the final checkpoint
        return self.summary()

    def forward_backward(self) -> float:
        """This rank's micro-batches of the step's global batch: their gradients add up in model.grads to
        the gradient of the mean loss over every scored target (not -1) of every micro-batch of every process;
        returns the sum of this rank's losses, each weighted as its gradient (share() divides by the number
        of micro-batches)."""
        K, rank = self.cfg.grad_accum, self.comm.rank
        global_batches = self.sampler.next_global(self.micro_batches)
        batches = global_batches[rank * K : (rank + 1) * K]
        # Token weighting (supervised fine-tuning masks targets with -1): micro-batch k's summed loss is
        # divided by the global batch's mean count per micro-batch, and average_gradients then divides by the
        # number of micro-batches: the mean over all scored targets of the global batch. Every rank holds the
        # whole global batch, so the count needs no communication. Without -1 targets each count is B*T and
        # the weight 1.0: the plain mean of the micro-batches' means, bit for bit.
        per_batch = sum(int(np.count_nonzero(y >= 0)) for _, y in global_batches) / self.micro_batches
        self.model.zero_grad()
        local_loss = 0.0
        for k, (x, y) in enumerate(batches):
            # dropout masks of this step and global micro-batch (so each rank's differ; 2 ranks draw
            # what --grad-accum 2 draws), the same again on resume (cllm/kernels/dropout.py)
            key = derive_key(self.cfg.seed, self.step, rank * K + k)
            loss = self.model.loss(x, y, dropout=self.cfg.dropout, dropout_key=key)
            self.model.backward(normalizer=per_batch)
            local_loss += (loss * (self.model.num_targets / per_batch)) if per_batch else 0.0
        if self.micro_batches > 1:
            average_gradients(self.model, self.comm, self.micro_batches)
        return local_loss

    def share(self, local_loss: float, stop) -> tuple[float, bool, bool]:
        """One small collective carries what every rank must agree on: (mean loss, Ctrl-C pressed on
        some rank, time budget used up); a time budget's plan (rank 0's) updates total_steps."""
        budget = self.cfg.max_time
        took = time.perf_counter() - self.t_start + (self.elapsed_before if self.planner else 0.0)
        flags = np.array(
            [
                local_loss,
                float(stop.requested),
                float(budget is not None and took >= budget),
                self.planner.total if self.main and self.planner else 0.0,
            ],
            dtype=np.float64,
        )
        self.comm.allreduce_sum_(flags)
        if self.planner and int(flags[3]) != self.total_steps:
            self.total_steps = int(flags[3])
            self.log.bar.total = None if self.total_steps == UNPLANNED else self.total_steps
        return flags[0] / self.micro_batches, flags[1] > 0, flags[2] > 0

    def evaluate(self, record: dict) -> bool:
        """Validate when due (adds val_loss to record); returns whether it is a new best. A time budget's
        planner measures the validation's cost and revises the plan around it."""
        self.val_loss, improved = None, False
        if self.main and self.planner:
            self.planner.reach(self.step, self.elapsed())
        if self.main and (
            is_due(self.step, self.cfg.eval_interval, EVAL_INTERVAL, self.planner) or self.step == self.total_steps
        ):
            with self.averaged():
                record.update(validation(self.model, self.tokenizer, self.val_tokens, self.B, self.T))
            self.val_loss = record["val_loss"]
            improved = self.val_loss < self.best_val
            self.best_val = min(self.best_val, self.val_loss)
        if self.main and self.planner:
            self.planner.after_step(self.step, self.elapsed())
            record["planned_steps"] = self.planner.planned
        return improved

    def sample(self) -> None:
        cfg = self.cfg
        with self.averaged():
            text = sample_text(self.model, self.tokenizer, cfg.sample_prompt, cfg.sample_tokens,
                               seed=cfg.seed + self.step)
        self.log.block(f"--- sample at step {self.step} ---\n{cfg.sample_prompt}{text}\n---")

    def save(self, reason: str) -> None:
        """Checkpoint step_NNNNNN (atomic), then the latest (and best) links, then pruning."""
        ckdir, name = self.cfg.checkpoint_dir, f"step_{self.step:06d}"
        state = {
            "step": self.step,
            "optimizer_t": self.optimizer.t,
            "sampler_state": self.sampler.state(),
            "best_val_loss": None if self.best_val == math.inf else self.best_val,
            "val_loss": self.val_loss,
            "elapsed_s": self.elapsed(),
            "world_size": self.comm.size,
            "dataset_dir": self.dataset_dir,
            "reason": reason,
            "planned_steps": self.planner and self.planner.planned,
        }
        # with --ema-decay the average is the checkpoint's model and the optimizer's own weights go beside it
        with self.averaged() as online:
            ck.save_checkpoint(ckdir, name, self.model, self.optimizer, self.tokenizer, self.cfg.to_json(), state,
                               training_tensors={ONLINE_WEIGHTS: online} if self.average else None)
        ck.set_pointer(ckdir, "latest", name)
        if self.val_loss is not None and self.val_loss <= self.best_val:
            ck.set_pointer(ckdir, "best", name)
        ck.prune_checkpoints(ckdir, self.cfg.keep_last)
        self.last_saved = self.step

    def finish(self) -> None:
        """After the loop: a validation if the last step had none, and a final checkpoint."""
        if not self.main:
            return
        if self.val_loss is None and self.step > 0 and (not self.history or "val_loss" not in self.history[-1]):
            with self.averaged():
                record = {
                    "step": self.step,
                    **validation(self.model, self.tokenizer, self.val_tokens, self.B, self.T),
                    "elapsed_s": self.elapsed(),
                }
            self.val_loss = record["val_loss"]
            self.best_val = min(self.best_val, self.val_loss)
            self.log.write(record)
        if self.step != self.last_saved:
            self.save("interrupt" if self.stopped else "end")

    def elapsed(self) -> float:
        """Seconds of the run, across resumes."""
        return self.elapsed_before + time.perf_counter() - self.t_start

    def summary(self) -> dict:
        elapsed = time.perf_counter() - self.t_start
        trained_tokens = len(self.history) * self.tokens_per_step
        summary = {
            "steps": self.step,
            "final_train_loss": self.history[-1]["train_loss"] if self.history else None,
            "val_loss": self.val_loss,
            "best_val_loss": None if self.best_val == math.inf else self.best_val,
            "elapsed_s": elapsed,
            "tokens_per_sec": trained_tokens / elapsed if elapsed > 0 else 0.0,
            "checkpoint": os.path.join(self.cfg.checkpoint_dir, "latest"),
            "interrupted": self.stopped,
        }
        val = self.val_loss if self.val_loss is not None else float("nan")
        self.say(
            f"done: {self.step} steps, val loss {val:.4f}, {summary['tokens_per_sec']:.0f} tokens/s, "
            f"{elapsed:.1f} s; checkpoint {summary['checkpoint']}"
        )
        self.log.plot()
        return summary


class StopFlag:
    """Ctrl-C asks the loop to stop after the current step (so a checkpoint is consistent);
    a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        say("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
