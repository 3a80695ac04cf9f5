"""What `cli.py generate --image-out/--class/--complete` does for image models; the command module
(cllm/commands/generate.py) hands over to this function. `cli.py evaluate`'s is
cllm/vision/likelihood.py's evaluate_checkpoint."""
from __future__ import annotations

import sys

from cllm.errors import ConfigError
from cllm.generation import SamplingConfig
from cllm.vision.images import load_images
from cllm.vision.likelihood import load_image_model
from cllm.vision.sampling import complete_image, completion_grid, grid, sample_images, save_png


def generate_images(checkpoint: str, image_out: str | None, num_samples: int, image_class: str | None,
                    complete: str | None, temperature: float, top_k: int, top_p: float, seed: int | None,
                    threads: int | None = None, tokenizer: str | None = None, keep_rows: int | None = None) -> int:
    """Write a grid of samples (or of completions of `complete`) to image_out as PNG."""
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
