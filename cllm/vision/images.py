"""Reading a folder of images with Pillow: which files, which labels, which pixels.

    found = find_images("digits/train")          # files, class names (a folder per class), skipped
    images = load_images("digits/train", size=8)  # ImageSet: pixels (n,H,W,C) uint8, labels (n,)

Labels follow torchvision's ImageFolder convention: when every image lies below a sub-folder of the
root, the first folder of its path is its class (classes sorted by name). Images directly in the
root make the set unlabelled.

A file is refused, with one message and a count per reason, when its extension is not an image's
("not an image"), when Pillow cannot identify it ("corrupt"), when decoding fails part-way
("truncated"), or when its header declares more than `max_pixels` pixels ("too large": a
decompression bomb is refused from its header, before any pixel is decoded).

Resize policy (`size` S): centre-crop to the largest centred square, then resize to S x S with
Lanczos filtering; nothing is padded. Without S, every image must already have one size.
"""
from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cllm.errors import DataError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
MAX_PIXELS = 1 << 26  # 67 million pixels (an 8192 x 8192 image); bigger headers are refused unread
REASONS = ("not an image", "corrupt", "truncated", "too large")


class ImageFileError(DataError):
    """One image file that cannot be used; `reason` is one of REASONS."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXT


@dataclass
class FoundImages:
    root: str
    files: list[str]  # image paths, sorted
    labels: list[int | None]  # class index per file (None: unlabelled set)
    classes: list[str]  # class names, sorted; [] when unlabelled
    skipped: Counter = field(default_factory=Counter)  # reason -> files


def find_images(path: str) -> FoundImages:
    """Every image file under `path` (a directory, walked recursively in sorted order, hidden entries
    skipped; or one image file), with ImageFolder labels. Files that are not images are counted."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"image path {path} does not exist; give a folder of images (a sub-folder per class)")
    if os.path.isfile(path):
        return FoundImages(os.path.dirname(path), [path], [None], [], Counter())
    files, skipped = [], Counter()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if is_image_name(name):
                files.append(os.path.join(dirpath, name))
            else:
                skipped["not an image"] += 1
    files.sort(key=lambda f: os.path.relpath(f, path).split(os.sep))
    rel = [os.path.relpath(f, path).split(os.sep) for f in files]
    if files and all(len(parts) > 1 for parts in rel):
        classes = sorted({parts[0] for parts in rel})
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[parts[0]] for parts in rel]
    else:
        classes, labels = [], [None] * len(files)
    return FoundImages(path, files, labels, classes, skipped)


def open_image(path: str, max_pixels: int = MAX_PIXELS):
    """The decoded image (a loaded PIL.Image), or an ImageFileError saying why not."""
    # imported here: costly at start-up (~25 ms), and cllm/kinds.py's lookup imports this module for every
    # prepare and train, of text too
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFileError(f"{path}: refused, its header declares too many pixels ({exc})", "too large") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not a readable image (Pillow cannot identify it); it is corrupt or "
                             "not an image", "corrupt") from None
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot read it ({exc})", "corrupt") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageFileError(f"{path}: refused, {w} x {h} pixels is more than the limit of {max_pixels:,} "
                             "(a decompression bomb or a far too large image)", "too large")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's decoders raise these on damaged data
        img.close()
        raise ImageFileError(f"{path}: the image data is truncated or damaged ({exc})", "truncated") from None
    return img


def fit_size(img, size: int | None):
    """Centre-crop to a square and resize to size x size (Lanczos); None leaves the image as it is."""
    if size is None:
        return img
    from PIL import Image  # noqa: PLC0415 (costly: see open_image)

    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if (w, h) != (s, s):
        img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return img


def to_array(img, grayscale: bool) -> np.ndarray:
    """(H, W, C) uint8, C = 1 (grayscale) or 3 (RGB; an alpha channel is dropped, a palette expanded)."""
    if grayscale:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def is_grayscale_image(img) -> bool:
    return img.mode in ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class ImageSet:
    pixels: np.ndarray  # (n, H, W, C) uint8
    labels: np.ndarray | None  # (n,) int64 class indices, None when unlabelled
    classes: list[str]
    files: list[str]  # the files that were read, in order
    skipped: Counter  # reason -> files refused
    grayscale: bool


def load_images(path: str, size: int | None = None, grayscale: bool | None = None, max_pixels: int = MAX_PIXELS,
                classes: list[str] | None = None, warn=None) -> ImageSet:
    """Read every usable image under `path` (see the module doc). grayscale None: grayscale when every
    image is. `classes` (a trained tokenizer's) fixes the label order; a folder outside it is an error.
    `warn(message)` receives one line per refused file (default: printed to stderr)."""
    warn = warn or _stderr
    found = find_images(path)
    decoded, labels, files = [], [], []
    skipped = Counter(found.skipped)
    for f, label in zip(found.files, found.labels):
        try:
            img = fit_size(open_image(f, max_pixels), size)
        except ImageFileError as exc:
            skipped[exc.reason] += 1
            warn(f"skipping {exc}")
            continue
        decoded.append(img)
        labels.append(label)
        files.append(f)
    if not decoded:
        raise DataError(f"no usable images under {path} ({_describe(skipped) or 'no image files'}); give a folder "
                        f"of {', '.join(sorted(e[1:] for e in IMAGE_EXT))} files")
    gray = all(is_grayscale_image(img) for img in decoded) if grayscale is None else bool(grayscale)
    arrays = [to_array(img, gray) for img in decoded]
    shapes = Counter(a.shape for a in arrays)
    if len(shapes) > 1:
        (common, _), = shapes.most_common(1)
        odd = next(f for f, a in zip(files, arrays) if a.shape != common)
        raise DataError(f"the images under {path} have different sizes ({common[1]}x{common[0]} and others, e.g. "
                        f"{odd}); pass --image-size S to centre-crop and resize them all to S x S")
    label_array = None
    out_classes = found.classes
    if found.classes:
        label_array = np.asarray(labels, dtype=np.int64)
        if classes is not None:
            label_array, out_classes = _relabel(label_array, found.classes, classes, path)
    return ImageSet(np.stack(arrays), label_array, out_classes, files, skipped, gray)


def _relabel(labels, found: list[str], known: list[str], path: str):
    unknown = [c for c in found if c not in known]
    if unknown:
        raise DataError(f"{path} has class folder(s) {', '.join(unknown[:5])} that the model was not trained on "
                        f"(its classes: {', '.join(known[:20])})")
    index = np.asarray([known.index(c) for c in found], dtype=np.int64)
    return index[labels], list(known)


def _describe(skipped: Counter) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()) if n)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
