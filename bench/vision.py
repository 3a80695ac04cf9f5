"""Image model on the bundled digits (data/digits): bits per dimension and classification accuracy,
each against baselines computed in the same run. Prints one JSON line.

    .venv/bin/python bench/vision.py                     # train, evaluate, compare (a few minutes)
    .venv/bin/python bench/vision.py --samples-out docs/vision-samples.png --completions-out docs/vision-completions.png

The model trains on data/digits/train (90% of it; 10% is training's validation split) and is
scored on data/digits/test, every figure on the same 359 test images:
- bits/dim of the model: -log2 p(image) / 64, the class summed out (p(x) = sum_y p(y) p(x | y));
- independent per-pixel histograms (one 17-bin histogram per pixel position, and one shared by
  all positions, counted on every training image, add-one smoothed): what a model without any
  dependence between pixels achieves;
- PNG: the test images' own files (8-bit grayscale, optimize=True, their headers included), and all
  of them tiled into one PNG (the headers shared), in bits per pixel;
- scikit-learn's logistic regression and k-nearest-neighbours on the same pixels, trained on every
  training image (if scikit-learn is installed: the [bench] extra).
Timings are wall time on this machine; with other processes running they vary, so the JSON names the
number of CPUs and the load average.

JSON keys: bench, smoke, dataset, train_images, test_images, model, best_val_loss, checkpoint_step,
bits_per_dim, bits_per_dim_joint, histogram_per_position_bits_per_dim, histogram_shared_bits_per_dim,
png_files_bits_per_pixel, png_tiled_bits_per_pixel, accuracy, accuracy_logistic_regression, accuracy_knn_1,
accuracy_knn_5 (null without scikit-learn, with not_run.sklearn saying why), confusion_matrix, train_s,
train_tokens_per_s, eval_s, cpus, load_average, wall_s.
  --smoke: a 1-layer, 16-dim model trained for 3 steps of 4 images, scored on the whole test set
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP, missing  # noqa: E402
from cllm.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from cllm.generation import SamplingConfig  # noqa: E402
from cllm.tokenizers import load_tokenizer  # noqa: E402
from cllm.training import TrainConfig, train  # noqa: E402
from cllm.vision.images import load_images  # noqa: E402
from cllm.vision.likelihood import evaluate_images  # noqa: E402
from cllm.vision.sampling import complete_image, completion_row, grid, sample_images, save_png  # noqa: E402

DIGITS = os.path.join(ROOT, "data", "digits")


def histogram_bits(train_ids: np.ndarray, test_ids: np.ndarray, K: int, per_position: bool) -> float:
    """bits/dim of test colour ids (n, N) under add-one smoothed histograms of train ids (m, N)."""
    if per_position:
        counts = np.stack([np.bincount(col, minlength=K) for col in train_ids.T]) + 1.0  # (N, K)
        p = counts / counts.sum(1, keepdims=True)
        logp = np.log2(p[np.arange(test_ids.shape[1])[None, :], test_ids])
    else:
        counts = np.bincount(train_ids.ravel(), minlength=K) + 1.0
        logp = np.log2((counts / counts.sum())[test_ids])
    return float(-logp.mean())


def png_bits(files: list[str], pixels: np.ndarray) -> dict:
    """PNG bits per pixel: of the files themselves, and of all the images tiled into one PNG."""
    own = sum(os.path.getsize(f) for f in files) * 8 / pixels[..., 0].size
    n, H, W, _ = pixels.shape
    cols = math.ceil(math.sqrt(n))
    canvas = np.zeros((math.ceil(n / cols) * H, cols * W), np.uint8)
    for i, img in enumerate(pixels[..., 0]):
        r, c = divmod(i, cols)
        canvas[r * H:(r + 1) * H, c * W:(c + 1) * W] = img
    buf = io.BytesIO()
    Image.fromarray(canvas, "L").save(buf, format="PNG", optimize=True)
    return {"png_files_bits_per_pixel": own, "png_tiled_bits_per_pixel": len(buf.getvalue()) * 8 / pixels[..., 0].size}


SKLEARN_KEYS = ("accuracy_logistic_regression", "accuracy_knn_1", "accuracy_knn_5")


def sklearn_baselines(train, test) -> dict:
    reason = missing("sklearn", "bench")
    if reason:
        return {**dict.fromkeys(SKLEARN_KEYS), "not_run": {"sklearn": reason}}
    from sklearn.linear_model import LogisticRegression  # optional (the bench extra), and slow to import
    from sklearn.neighbors import KNeighborsClassifier
    X, y = train.pixels.reshape(len(train.pixels), -1) / 255.0, train.labels
    Xt, yt = test.pixels.reshape(len(test.pixels), -1) / 255.0, test.labels
    out = {}
    for name, clf in (("logistic_regression", LogisticRegression(max_iter=5000)),
                      ("knn_1", KNeighborsClassifier(1)), ("knn_5", KNeighborsClassifier(5))):
        out[f"accuracy_{name}"] = float((clf.fit(X, y).predict(Xt) == yt).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=4)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--checkpoint-dir", default=None, help="keep the run here (default: a temporary directory)")
    ap.add_argument("--samples-out", default=None, help="also write a grid of samples (one row per class)")
    ap.add_argument("--completions-out", default=None, help="also write completions of test images")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.embed_dim, args.num_layers, args.num_heads, args.batch_size = 3, 16, 1, 2, 4

    t_all = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    ckdir = args.checkpoint_dir or os.path.join(tmp.name, "run")
    cfg = TrainConfig(data=os.path.join(DIGITS, "train"), palette=17, max_steps=args.steps, eval_interval=250,
                      checkpoint_interval=args.steps, sample_interval=10**9, embed_dim=args.embed_dim,
                      num_layers=args.num_layers, num_heads=args.num_heads, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, min_lr=args.learning_rate / 10,
                      weight_decay=args.weight_decay, seed=args.seed, checkpoint_dir=ckdir, progress=False)
    t0 = time.perf_counter()
    summary = train(cfg)
    train_s = time.perf_counter() - t0
    ckpt = load_checkpoint(os.path.join(ckdir, "best"))
    model = model_from_checkpoint(ckpt)
    tok = load_tokenizer(ckpt.tokenizer_path)
    t0 = time.perf_counter()
    result = evaluate_images(model, tok, os.path.join(DIGITS, "test"), classify=True)
    eval_s = time.perf_counter() - t0

    train_set = load_images(os.path.join(DIGITS, "train"), grayscale=True)
    test_set = load_images(os.path.join(DIGITS, "test"), grayscale=True)
    K = tok.num_colours
    train_ids, test_ids = tok.quantize(train_set.pixels), tok.quantize(test_set.pixels)
    out = {
        "bench": "vision", "smoke": args.smoke, "dataset": "data/digits (UCI optical digits, 8x8, 17 grey levels)",
        "train_images": len(train_ids), "test_images": len(test_ids),
        "model": {k: getattr(cfg, k) for k in ("embed_dim", "num_layers", "num_heads", "batch_size", "learning_rate",
                                               "max_steps", "seed")} | {"parameters": model.num_parameters()},
        "best_val_loss": summary["best_val_loss"], "checkpoint_step": ckpt.state.get("step"),
        "bits_per_dim": result["bits_per_dim"], "bits_per_dim_joint": result["bits_per_dim_joint"],
        "histogram_per_position_bits_per_dim": histogram_bits(train_ids, test_ids, K, True),
        "histogram_shared_bits_per_dim": histogram_bits(train_ids, test_ids, K, False),
        **png_bits(test_set.files, test_set.pixels),
        "accuracy": result["accuracy"], **sklearn_baselines(train_set, test_set),
        "confusion_matrix": result["confusion_matrix"],
        "train_s": round(train_s, 1), "train_tokens_per_s": round(summary["tokens_per_sec"]),
        "eval_s": round(eval_s, 2), "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.samples_out or args.completions_out:
        write_figures(model, tok, test_set, args)
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out))


def write_figures(model, tok, test_set, args) -> None:
    sampling = SamplingConfig(temperature=1.0, seed=args.seed)
    if args.samples_out:
        rows = [sample_images(model, tok, 8, sampling, label=c)[0] for c in tok.classes]
        save_png(grid(np.concatenate(rows), cols=8, scale=4), args.samples_out)
    if args.completions_out:
        picks = [int(np.flatnonzero(test_set.labels == c)[0]) for c in range(0, len(tok.classes), 2)]
        rows = []
        for i in picks:
            completions, original = complete_image(model, tok, test_set.pixels[i], 6, sampling)
            rows.append(completion_row(original, completions, tok.height // 2))
        save_png(grid(np.concatenate(rows), cols=8, scale=4), args.completions_out)


if __name__ == "__main__":
    main()
