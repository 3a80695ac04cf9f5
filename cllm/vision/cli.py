"""What `cli.py generate --image-out/--class/--complete` and `cli.py evaluate` do for image models;
the command modules (cllm/commands/generate.py, evaluate.py) hand over to these functions."""
from __future__ import annotations

import json
import sys

from cllm.errors import ConfigError


def load_image_model(checkpoint: str, tokenizer: str | None = None, threads: int | None = None):
    """(model, image tokenizer, checkpoint path); a clear error for a text checkpoint."""
    from cllm.completion import load_for_generation

    model, tok, path = load_for_generation(checkpoint, tokenizer, threads)
    if tok.kind != "image":
        raise ConfigError(f"{path} is a text model ({tok.kind} tokenizer); image generation and --classify need a "
                          "model trained on a folder of images")
    return model, tok, path


def generate_images(checkpoint: str, image_out: str | None, num_samples: int, image_class: str | None,
                    complete: str | None, temperature: float, top_k: int, top_p: float, seed: int | None,
                    threads: int | None = None, tokenizer: str | None = None, keep_rows: int | None = None) -> int:
    """Write a grid of samples (or of completions of `complete`) to image_out as PNG."""
    from cllm.generation import SamplingConfig
    from cllm.vision.images import load_images
    from cllm.vision.sampling import complete_image, completion_grid, grid, sample_images, save_png

    if not image_out:
        raise ConfigError("give the PNG file to write: --image-out samples.png")
    if not image_out.lower().endswith(".png"):
        raise ConfigError(f"--image-out writes a PNG file; name it *.png, got {image_out!r}")
    model, tok, _ = load_image_model(checkpoint, tokenizer, threads)
    sampling = SamplingConfig(max_new_tokens=tok.record_len, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed)
    if complete is None:
        pixels, labels = sample_images(model, tok, num_samples, sampling, label=image_class)
        save_png(grid(pixels), image_out)
        shown = f" of classes {' '.join(labels)}" if tok.labelled else ""
        print(f"wrote {num_samples} samples{shown} to {image_out}", file=sys.stderr)
        return 0
    size = tok.height if tok.height == tok.width else None
    image = load_images(complete, size, tok.channels == 1).pixels[0]
    if image.shape[:2] != (tok.height, tok.width):
        raise ConfigError(f"{complete} is {image.shape[1]}x{image.shape[0]}; this model reads {tok.width}x{tok.height}")
    rows = tok.height // 2 if keep_rows is None else keep_rows
    completions, original = complete_image(model, tok, image, num_samples, sampling, rows=rows, label=image_class)
    save_png(completion_grid(original, completions, rows), image_out)
    print(f"wrote the original, its top {rows} rows and {num_samples} completions to {image_out}", file=sys.stderr)
    return 0


def evaluate_command(checkpoint: str, data: str | None, classify: str | None, batch_size: int, as_json: bool,
                     threads: int | None = None, tokenizer: str | None = None) -> int:
    """`cli.py evaluate CHECKPOINT IMAGES/` (bits per dimension) or `--classify TEST_DIR` (also accuracy
    and the confusion matrix)."""
    from cllm.vision.likelihood import evaluate_images, format_confusion

    if data is not None and classify is not None and data != classify:
        raise ConfigError("give the images once: either DATA or --classify TEST_DIR")
    path = classify or data
    model, tok, ckpt = load_image_model(checkpoint, tokenizer, threads)
    result = {"checkpoint": ckpt, "data": path,
              **evaluate_images(model, tok, path, classify=classify is not None, batch_size=batch_size)}
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    print(f"checkpoint   {ckpt}")
    print(f"data         {path} ({result['images']} images of {tok.width}x{tok.height}x{tok.channels})")
    print(f"bits/dim     {result['bits_per_dim']:.4f} (-log2 p(image) per pixel and channel)")
    if "bits_per_dim_joint" in result:
        print(f"  with label {result['bits_per_dim_joint']:.4f} (-log2 p(true class, image), as training's validation)")
    if "accuracy" in result:
        print(f"accuracy     {result['accuracy']:.4f} (classification by likelihood)")
        print("confusion matrix (rows: true class, columns: predicted)")
        print(format_confusion(result["classes"], result["confusion_matrix"]))
    return 0
