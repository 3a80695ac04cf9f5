"""The best model a user gets in a fixed wall-clock budget (issue 20): a sweep on tiny Shakespeare (char).

Every point is one `cli.py train` run in its own process, exactly as a user would type it, with the
time budget setting its length (`--max-time S` alone: warmup and cosine decay to --min-lr laid over
S seconds, cllm/schedule.py), so points of any size are compared at equal wall time. Two stages:
  screen   the grid below (model size x context x batch x learning rate x dropout), each point with
           a short budget (--screen-time); a short budget favours small models, hence
  confirm  the best --confirm-top screened points again with the full budget (--confirm-time),
           each with every --confirm-dropouts value and every --confirm-seeds seed when given.
--variants crosses the grid with named sets of further train flags (an architecture, an optimizer, block
options): "gpt2=;llama=--arch llama --ffn-dim 512" screens every point as both. --jobs 2 runs two points
at once, each pinned to its own core with --threads 1 (taskset): an A/B under identical conditions in
the wall time of one run; such points' names end in -t1, their tokens/s are one core's.
Every finished point is appended at once to one JSONL file (--out): its command, configuration,
steps, tokens, tokens/s, the validation loss over the whole validation split at the end, the best
one, and the curve (minutes, validation loss). A point already in the file is not run again, so an
interrupted sweep continues where it stopped. Prints ONE JSON line: the best screened and confirmed
points. Timings depend on what else runs on the machine: sweep on an otherwise idle one.

The JSON line's keys: bench, smoke, out, screened, best_screened and confirmed (lists of {name, val_loss,
best_val_loss, tokens, wall_s, command}).

Usage:
  .venv/bin/python bench/recipe.py                                    # the default grid, 300 s / 1800 s
  .venv/bin/python bench/recipe.py --screen-time 20 --max-points 2 --confirm-top 0   # a quick trial
  .venv/bin/python bench/recipe.py --sizes 4x4x128,6x6x192 --dropouts 0,0.2 --lrs 1e-3
  .venv/bin/python bench/recipe.py --sizes 4x4x192 --lrs 2e-3 --dropouts 0.1 --beta2s 0.999 --weight-decays 0 \
      --variants "gpt2=;llama=--arch llama --ffn-dim 512" --screen-time 1800 --confirm-top 0 --jobs 2
  .venv/bin/python bench/recipe.py --smoke    # one 1x2x32 point screened for 2 s on the corpus's first 100 KB,
      # in a temporary directory; its confirmation has the same budget, so it is found in the JSONL (as on resume)
"""
import argparse
import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP  # noqa: E402

CLI = os.path.join(ROOT, "cli.py")
DEFAULT_DATA = os.path.join(ROOT, "data", "tinyshakespeare.txt")
DEFAULT_SEED = 1337
SMOKE_ARGS = ["--sizes", "1x2x32", "--contexts", "32", "--batches", "4", "--lrs", "1e-3", "--dropouts", "0",
              "--screen-time", "2", "--confirm-top", "1", "--confirm-time", "2", "--warmup-steps", "2"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="the corpus (default: data/tinyshakespeare.txt)")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "checkpoints", "recipe"), help="runs and dataset")
    ap.add_argument("--out", default=None, help="the JSONL of every point (default: WORK_DIR/points.jsonl)")
    ap.add_argument("--sizes", default="4x4x128,4x4x192,6x6x192,6x6x256", help="LxNHxC model sizes")
    ap.add_argument("--contexts", default="128,256", help="--seq-len values")
    ap.add_argument("--batches", default="16,32", help="--batch-size values")
    ap.add_argument("--batch-tokens", type=int, default=0,
                    help="instead of --batches: each context's batch is this many tokens over its --seq-len, so that "
                         "contexts compare at the same tokens per step")
    ap.add_argument("--lrs", default="1e-3,2e-3", help="peak learning rates (--min-lr is a tenth)")
    ap.add_argument("--dropouts", default="0,0.1,0.2", help="--dropout values")
    ap.add_argument("--beta2s", default="0.99", help="AdamW --beta2 values (nanoGPT's 0.99 suits small batches)")
    ap.add_argument("--weight-decays", default="0.1", help="--weight-decay values (nanoGPT's 0.1)")
    ap.add_argument("--screen-time", type=float, default=300.0, help="seconds per screened point")
    ap.add_argument("--confirm-time", type=float, default=1800.0, help="seconds per confirmed point")
    ap.add_argument("--confirm-top", type=int, default=2, help="screened points confirmed with the full budget")
    ap.add_argument("--confirm-dropouts", default=None,
                    help="confirm each finalist with each of these --dropout values (default: its own); a short "
                         "screen cannot show what dropout buys late in a run, when a model starts to overfit")
    ap.add_argument("--confirm-seeds", default=None, help="confirm each finalist with each of these --seed values")
    ap.add_argument("--variants", default="gpt2=",
                    help="';'-separated NAME=TRAIN FLAGS, each crossed with the grid (default: gpt2 with no flags)")
    ap.add_argument("--jobs", type=int, default=1, choices=(1, 2),
                    help="points run at once; 2 pins each to one core with --threads 1")
    ap.add_argument("--max-points", type=int, default=None, help="screen only the first N grid points")
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--plot", default=None, help="write the confirmed points' curves (val loss against minutes) "
                    "to this PNG (needs matplotlib, the [plot] extra)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    return ap.parse_args((sys.argv[1:] if argv is None else argv) + SMOKE_ARGS) if args.smoke else args


def variants(text: str) -> list[tuple[str, str]]:
    """--variants "gpt2=;llama=--arch llama" -> [("gpt2", ""), ("llama", "--arch llama")]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, flags = part.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"recipe.py: --variants wants NAME=FLAGS parts separated by ';', got {part!r}")
        out.append((name.strip(), flags.strip()))
    return out


def grid(args) -> list[dict]:
    """The screening points, the cartesian product of the lists, in a fixed order. A point's "variant" and
    "flags" (its variant's further train flags) are left out of the dict for the default variant, so that
    the first sweep's points keep their names."""
    floats = lambda text: [float(x) for x in text.split(",")]  # noqa: E731
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.batch_tokens:
        shapes = [(T, max(1, args.batch_tokens // T)) for T in ints(args.contexts)]
    else:
        shapes = list(itertools.product(ints(args.contexts), ints(args.batches)))
    points = []
    for (L, NH, C), (T, B), lr, p, b2, wd, (variant, flags) in itertools.product(
            sizes, shapes, floats(args.lrs), floats(args.dropouts),
            floats(args.beta2s), floats(args.weight_decays), variants(args.variants)):
        point = {"num_layers": L, "num_heads": NH, "embed_dim": C, "seq_len": T, "batch_size": B,
                 "learning_rate": lr, "min_lr": lr / 10, "dropout": p, "beta2": b2, "weight_decay": wd}
        if flags:
            point.update(variant=variant, flags=flags)
        if args.seed != DEFAULT_SEED:  # in the point, so that its name says it (and no other seed's run is overwritten)
            point["seed"] = args.seed
        points.append(point)
    return points[:args.max_points] if args.max_points else points


def point_name(point: dict, budget: float, threads: int = 0) -> str:
    """The point's name; -v<variant>, -s<seed> and -t1 only where they differ from the first sweep's."""
    variant = f"-v{point['variant']}" if point.get("flags") else ""
    seed = f"-s{point['seed']}" if point.get("seed", DEFAULT_SEED) != DEFAULT_SEED else ""
    return (f"L{point['num_layers']}-NH{point['num_heads']}-C{point['embed_dim']}-T{point['seq_len']}"
            f"-B{point['batch_size']}-lr{point['learning_rate']:g}-p{point['dropout']:g}"
            f"{optimizer_suffix(point)}{variant}{seed}-{budget:g}s{'-t1' if threads == 1 else ''}")


def optimizer_suffix(point: dict) -> str:
    """-b2..-wd.. when the point sets them (the first sweep's points used the CLI's defaults and no suffix)."""
    return "".join(f"-{tag}{point[key]:g}" for key, tag in (("beta2", "b2"), ("weight_decay", "wd")) if key in point)


def train_command(dataset: str, point: dict, budget: float, run_dir: str, args, threads: int = 0) -> list[str]:
    """The `cli.py train` command of one point (the README's form of it, with the prepared dataset)."""
    cmd = [sys.executable, CLI, "train", dataset, "--max-time", f"{budget:g}", "--checkpoint-dir", run_dir,
           "--warmup-steps", str(args.warmup_steps), "--sample-interval", "1000000", "--no-progress", "--overwrite"]
    if "seed" not in point:
        cmd += ["--seed", str(args.seed)]
    if threads:
        cmd += ["--threads", str(threads)]
    for key, value in point.items():
        if key not in ("variant", "flags"):
            cmd += ["--" + key.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value)]
    return cmd + point.get("flags", "").split()


def run_point(dataset: str, point: dict, budget: float, stage: str, args, core: int | None = None) -> dict:
    """One point in its own process; with a core (--jobs 2), pinned to it with one thread."""
    threads = 1 if core is not None else 0
    name = point_name(point, budget, threads)
    run_dir = os.path.join(args.work_dir, "runs", name)
    cmd = train_command(dataset, point, budget, run_dir, args, threads)
    pin = ["taskset", "-c", str(core)] if core is not None else []
    t0 = time.perf_counter()
    # a failed point is recorded, not raised
    proc = subprocess.run(pin + cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    record = {"stage": stage, "name": name, "budget_s": budget, "config": point, "wall_s": round(wall, 1),
              "command": " ".join(pin + cmd[1:]), "returncode": proc.returncode}
    if proc.returncode != 0:
        record["error"] = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return record
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    steps = [m for m in metrics if "train_loss" in m]
    vals = [m for m in metrics if "val_loss" in m]
    tokens = len(steps) * point["batch_size"] * point["seq_len"]
    train_s = steps[-1]["elapsed_s"] if steps else 0.0
    record.update({"steps": len(steps), "tokens": tokens, "tokens_per_sec": round(tokens / train_s) if train_s else 0,
                   "final_lr": steps[-1]["lr"] if steps else None,
                   "val_loss": vals[-1]["val_loss"] if vals else None,
                   "best_val_loss": min(v["val_loss"] for v in vals) if vals else None,
                   "final_train_loss": steps[-1]["train_loss"] if steps else None,
                   "curve": [[round(v["elapsed_s"] / 60, 3), round(v["val_loss"], 4)] for v in vals]})
    return record


def load_points(path: str) -> dict[str, dict]:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {r["name"]: r for r in (json.loads(line) for line in f if line.strip())}


def append_point(path: str, record: dict) -> None:
    """One line per finished point, flushed and synced at once (a sweep takes hours)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def prepare(args) -> str:
    """Tokenize the corpus once (char level, the CLI's default 10% validation split) for every point,
    and compile the kernels into Numba's disk cache with a one-step run of each variant (with dropout, and
    with one thread when --jobs pins them), so that no point's budget pays for compilation."""
    out = os.path.join(args.work_dir, "dataset")
    subprocess.run([sys.executable, CLI, "prepare", args.data, "--tokenizer", "char", "--out", out,
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    threads = ["--threads", "1"] if args.jobs > 1 else []
    for name, flags in variants(args.variants):
        subprocess.run([sys.executable, CLI, "train", out, "--max-steps", "1", "--dropout", "0.1", "--no-progress",
                        "--overwrite", "--checkpoint-dir", os.path.join(args.work_dir, "warmup-" + name), *threads,
                        *flags.split()], check=True, cwd=ROOT, capture_output=True)
    return out


def run_stage(stage: str, points: list[dict], budget: float, dataset: str, done: dict, args) -> list[dict]:
    """Every point not already in `done`, --jobs at a time (core i for the i-th of a pair)."""
    threads = 1 if args.jobs > 1 else 0
    todo = [p for p in points if point_name(p, budget, threads) not in done]
    for start in range(0, len(todo), args.jobs):
        batch = todo[start:start + args.jobs]
        cores = range(len(batch)) if args.jobs > 1 else [None]
        with concurrent.futures.ThreadPoolExecutor(len(batch)) as pool:
            records = list(pool.map(lambda pc: run_point(dataset, pc[0], budget, stage, args, pc[1]),
                                    zip(batch, cores)))
        for record in records:
            append_point(args.out, record)
            done[record["name"]] = record
            print(f"[{stage}] {record['name']}: val {record.get('val_loss')} "
                  f"({record.get('tokens_per_sec')} tok/s, {record['wall_s']} s)", file=sys.stderr, flush=True)
    return [done[point_name(p, budget, threads)] for p in points]


def ranked(records: list[dict]) -> list[dict]:
    return sorted((r for r in records if r.get("val_loss") is not None), key=lambda r: r["val_loss"])


def plot_curves(records: list[dict], path: str) -> None:
    """Validation loss against minutes of each record (the confirmed points), one line each."""
    import matplotlib  # optional (the plot extra), and only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        minutes, losses = zip(*r["curve"])
        ax.plot(minutes, losses, "o-", markersize=3, label=f"{r['name']}: {r['val_loss']:.3f}")
    ax.set_xlabel("minutes of wall time")
    ax.set_ylabel("validation loss (nats per character)")
    ax.set_ylim(top=min(2.5, ax.get_ylim()[1]))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="cllm-bench-recipe-") as tmp:
            args.work_dir = tmp
            args.data = os.path.join(tmp, "corpus.txt")
            with open(DEFAULT_DATA, encoding="utf-8") as src, open(args.data, "w", encoding="utf-8") as dst:
                dst.write(src.read(100_000))
            return sweep(args)
    return sweep(args)


def sweep(args) -> None:
    args.out = args.out or os.path.join(args.work_dir, "points.jsonl")
    os.makedirs(args.work_dir, exist_ok=True)
    dataset = prepare(args)
    done = load_points(args.out)
    screened_now = run_stage("screen", grid(args), args.screen_time, dataset, done, args)
    # Finalists are the best of every point screened with this budget in the file, so that a sweep
    # run as several invocations over different grids confirms the best of them all.
    screened = ranked(r for r in done.values() if r["stage"] == "screen" and r["budget_s"] == args.screen_time
                      and r["name"].endswith("-t1") == (args.jobs > 1))
    finalists = [r["config"] for r in screened[:args.confirm_top]]
    if args.confirm_dropouts is not None:
        finalists = [dict(c, dropout=float(p)) for c in finalists for p in args.confirm_dropouts.split(",")]
    if args.confirm_seeds is not None:
        finalists = [dict(c, seed=int(s)) for c in finalists for s in args.confirm_seeds.split(",")]
    confirmed = ranked(run_stage("confirm", finalists, args.confirm_time, dataset, done, args))
    if args.plot and (confirmed or args.confirm_top == 0):  # no confirmation: this grid's screened curves
        plot_curves(confirmed or ranked(screened_now), args.plot)
    keys = ("name", "val_loss", "best_val_loss", "tokens", "wall_s", "command")
    brief = lambda r: {k: r.get(k) for k in keys}  # noqa: E731
    print(json.dumps({"bench": "recipe", "smoke": args.smoke, "out": args.out, "screened": len(screened),
                      "best_screened": [brief(r) for r in screened[:3]],
                      "confirmed": [brief(r) for r in confirmed]}))


if __name__ == "__main__":
    main()
