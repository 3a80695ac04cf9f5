"""`python cli.py train [DATA] [flags]`: train a GPT; see cllm/training/trainer.py for the loop.

The flags are TrainConfig's fields (cllm/training/config.py), each with its default and meaning there."""
import sys
import traceback

from cllm.distributed import world
from cllm.errors import CLLMError
from cllm.training import TrainConfig as OPTIONS  # noqa: F401 (the name run_command looks for)
from cllm.training import build_config, train


def main(data: str | None = None, **flags):
    """Train a GPT on DATA (a file, a directory, a prepared dataset or a crawl's output; default: data/).

    Several processes: `mpirun -n N python cli.py train ...` trains data-parallel (the [mpi] extra).
    With neither --max-steps nor --max-time, training runs --epochs passes over the training split.
    A run's directory holds step_NNNNNN/ checkpoints, latest and best links, metrics.jsonl and
    loss.png; --resume latest continues it exactly.

    Args:
      data: a text file, a directory, a prepared dataset or a crawl's output (none: the bundled data/)
    """
    given = dict(flags)
    if data is not None:
        given["data"] = data
    comm = world()
    if comm.size == 1:
        summary = train(build_config(given))
    else:
        # a rank that fails must take the others down with it: they would wait forever in the next
        # collective operation otherwise
        try:
            summary = train(build_config(given))
        except CLLMError as exc:
            sys.stderr.write(f"error (rank {comm.rank}): {exc}\n")
            sys.stderr.flush()
            comm.abort(exc.exit_code)
        except BaseException:
            traceback.print_exc()
            sys.stderr.write(f"error: rank {comm.rank} of {comm.size} failed; aborting all ranks\n")
            sys.stderr.flush()
            comm.abort(1)
    return 130 if summary["interrupted"] else 0
