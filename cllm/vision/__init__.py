"""Vision: the same GPT learns, samples, completes and classifies images (the approach of Image GPT).

Each pixel becomes one token (its nearest colour in a palette: evenly spaced grey levels, or k-means
colours over sampled pixels), an image a record `<image> [<class>] pixels <end>` in raster order, and
a folder of images a token dataset like any text corpus; the kernels, trainer, checkpoints and
sampler are the text model's.

    images.py      find and read image files (Pillow), ImageFolder labels, resize, refusals
    palette.py     grey levels, k-means palette (kernels/kmeans.py), quantization
    tokenizer.py   ImageTokenizer: images <-> records, JSON save/load
    dataset.py     a folder of images -> train.bin/val.bin/tokenizer.json; validation bits/dim
    sampling.py    sample, complete, grids as PNG
    likelihood.py  bits per dimension and classification by likelihood
"""
from cllm.vision.dataset import evaluate_records, image_seq_len, is_image_source, prepare_image_dataset
from cllm.vision.images import ImageFileError, find_images, load_images, open_image
from cllm.vision.likelihood import evaluate_images, joint_log_probs
from cllm.vision.sampling import complete_image, completion_grid, grid, sample_images, save_png
from cllm.vision.tokenizer import ImageTokenizer

__all__ = ["ImageFileError", "ImageTokenizer", "complete_image", "completion_grid", "evaluate_images",
           "evaluate_records", "find_images", "grid", "image_seq_len", "is_image_source", "joint_log_probs",
           "load_images", "open_image", "prepare_image_dataset", "sample_images", "save_png"]
