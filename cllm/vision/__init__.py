"""Vision: the same GPT learns, samples, completes and classifies images (the approach of Image GPT).

Each pixel becomes one token (its nearest colour in a palette: evenly spaced grey levels, or k-means
colours over sampled pixels), an image a record `<image> [<class>] pixels <end>` in raster order, and
a folder of images a token dataset like any text corpus; the kernels, trainer, checkpoints and
sampler are the text model's.

    images.py      find and read image files (Pillow), ImageFolder labels, resize, refusals
    palette.py     grey levels, k-means palette (cllm/kernels/kmeans.py), quantization
    tokenizer.py   ImageTokenizer: images <-> records, JSON save/load
    dataset.py     a folder of images -> train.bin/val.bin/tokenizer.json; validation bits/dim
    sampling.py    sample, complete, grids as PNG
    likelihood.py  bits per dimension and classification by likelihood (`cli.py evaluate`)
    cli.py         what `cli.py generate` does for an image model
    kind.py        the "image" dataset kind: how the data, training, evaluation and serve layers treat
                   images, registered in cllm/kinds.py, which imports this module on its first lookup
"""
import importlib

# name -> submodule; imported on first use (PEP 562), so that `import cllm.vision.x` (cllm/kinds.py's
# lookup, cllm/tokenizers reading an image tokenizer) does not load every module of the package
_WHERE = {"evaluate_records": "dataset", "image_seq_len": "dataset", "is_image_source": "dataset",
          "prepare_image_dataset": "dataset", "ImageFileError": "images", "find_images": "images",
          "load_images": "images", "open_image": "images", "evaluate_images": "likelihood",
          "joint_log_probs": "likelihood", "complete_image": "sampling", "completion_grid": "sampling",
          "grid": "sampling", "sample_images": "sampling", "save_png": "sampling", "ImageTokenizer": "tokenizer"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'cllm.vision' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cllm.vision.{_WHERE[name]}"), name)
