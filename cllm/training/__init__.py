"""Training a GPT. `train(cfg)` is a whole run; each piece has its module:

    config.py      TrainConfig: every flag of `cli.py train` with its default and help; build_config
    data.py        what a run trains on (a prepared dataset, or one prepared here) and its batch sampler
    start.py       where a run starts: its directory, the checkpoint it resumes or fine-tunes from
    trainer.py     Trainer: setup (a new, resumed or fine-tuned model) and run(), the loop
    evaluation.py  the validation loss (cllm/evaluate.py's loop) and the printed samples
    logbook.py     metrics.jsonl, the progress bar, loss.png

The learning-rate schedule and the time budget are cllm/schedule.py's.
"""
from cllm.schedule import lr_at
from cllm.training.config import DEFAULT_DATA, MODEL_DEFAULTS, TrainConfig, build_config
from cllm.training.data import BatchSampler, load_dataset
from cllm.training.evaluation import evaluate_tokens, sample_text, validation
from cllm.training.logbook import plot_losses
from cllm.training.trainer import Trainer, train

__all__ = ["BatchSampler", "DEFAULT_DATA", "MODEL_DEFAULTS", "TrainConfig", "Trainer", "build_config",
           "evaluate_tokens", "load_dataset", "lr_at", "plot_losses", "sample_text", "train", "validation"]
