"""The image tokenizer: an image is a sequence of palette indices in raster order (Image GPT).

Token ids: 0..K-1 the palette's colours; then one label token per class; then `<image>` (bos_id,
which starts every image) and `<end>` (eos_id, the end-of-image token). One image is the record

    <image> [<class:NAME>] c(0,0) c(0,1) ... c(H-1,W-1) <end>          (record_len tokens)

so a model whose context is record_len sees one whole image per window, each token at a fixed
position; the label comes before the pixels, so the model learns p(pixels | label) and p(label).

Saved as JSON like the text tokenizers (cllm/tokenizers/base.py): kind "image", height, width,
channels, palette (K lists of C integers), classes, train_stats. `encode(text)` gives no ids (text
is not an image; a generation prompt then starts from `<image>`), `decode(ids)` draws the pixel
tokens as a text picture, one character per pixel, so training's periodic samples are readable.
"""
from __future__ import annotations

import warnings

import numpy as np

from cllm.errors import TokenizerError
from cllm.tokenizers.base import Tokenizer, TokenizerFileError, field
from cllm.vision.palette import gray_levels, kmeans_palette, quantize

RAMP = " .:-=+*#%@"  # dark to bright, for decode()'s text picture


class ImageTokenizer(Tokenizer):
    kind = "image"

    def __init__(self, height: int, width: int, palette, classes=()):
        super().__init__()
        palette = np.asarray(palette)
        if palette.ndim != 2 or palette.shape[1] not in (1, 3) or not 2 <= len(palette) <= 4096:
            raise TokenizerError("an image tokenizer's palette must be 2 to 4096 colours of 1 or 3 channels")
        if palette.min() < 0 or palette.max() > 255:
            raise TokenizerError("palette values must lie in 0..255")
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            raise TokenizerError(f"image size must be positive integers, got {height!r} x {width!r}")
        classes = list(classes)
        if len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
            raise TokenizerError("class names must be distinct non-empty strings")
        self.height, self.width, self.channels = height, width, int(palette.shape[1])
        self.palette = palette.astype(np.uint8)
        self.classes = classes
        K, L = len(palette), len(classes)
        self.num_colours, self.label_offset = K, K
        self.bos_id, self.eos_id = K + L, K + L + 1
        self._id_to_token = [f"c{i}" for i in range(K)] + [f"<class:{c}>" for c in classes] + ["<image>", "<end>"]
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        self._warned = False

    # ---- sizes --------------------------------------------------------------------------------
    @property
    def pixels_per_image(self) -> int:
        return self.height * self.width

    @property
    def dims_per_image(self) -> int:
        """What bits per dimension divides by: pixels x channels (the image-likelihood convention)."""
        return self.height * self.width * self.channels

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    @property
    def record_len(self) -> int:
        """Tokens per image: <image>, the label (if any), the pixels, <end>."""
        return 2 + self.labelled + self.pixels_per_image

    @property
    def first_pixel(self) -> int:
        """Position of the first pixel token in a record."""
        return 1 + self.labelled

    def label_id(self, label) -> int:
        """The token of a class, given by its name or its index."""
        if not self.classes:
            raise TokenizerError("this image model was trained without classes (no folder per class); drop --class")
        name = str(label)
        if name in self.classes:
            return self.label_offset + self.classes.index(name)
        raise TokenizerError(f"unknown class {label!r}; this model knows: {', '.join(self.classes[:30])}")

    # ---- training -----------------------------------------------------------------------------
    @classmethod
    def train(cls, pixels: np.ndarray, classes=(), palette: int = 16, seed: int = 0):
        """From images (n, H, W, C) uint8: C = 1 gives `palette` evenly spaced grey levels, C = 3 a
        k-means palette of at most `palette` colours."""
        n, H, W, C = pixels.shape
        flat = pixels.reshape(-1, C)
        pal = gray_levels(palette) if C == 1 else kmeans_palette(flat, palette, seed=seed)
        tok = cls(int(H), int(W), pal, classes)
        err = np.abs(tok.dequantize(tok.quantize(pixels)).astype(np.int64) - pixels).mean()
        tok.train_stats = {"images": int(n), "palette_size": len(pal), "requested_palette": int(palette),
                           "mean_abs_quantization_error": float(err), "channels": int(C)}
        return tok

    # ---- images <-> ids -----------------------------------------------------------------------
    def quantize(self, pixels: np.ndarray) -> np.ndarray:
        """(n, H*W) int32 colour ids of images (n, H, W, C) uint8 (or one image (H, W, C))."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        n, H, W, C = pixels.shape
        if (H, W, C) != (self.height, self.width, self.channels):
            raise TokenizerError(f"image of {W}x{H}x{C} given to a tokenizer of {self.width}x{self.height}x"
                                 f"{self.channels}")
        return quantize(pixels.reshape(-1, C), self.palette).reshape(n, H * W)

    def dequantize(self, ids: np.ndarray) -> np.ndarray:
        """(n, H, W, C) uint8 images from colour ids (n, H*W); a non-colour id is drawn black."""
        ids = np.asarray(ids).reshape(-1, self.pixels_per_image)
        safe = np.where((ids >= 0) & (ids < self.num_colours), ids, 0)
        return self.palette[safe].reshape(-1, self.height, self.width, self.channels)

    def encode_images(self, pixels: np.ndarray, labels=None) -> np.ndarray:
        """(n, record_len) int32 records of images (n, H, W, C) with class indices (n,) when labelled."""
        return self.records(self.quantize(pixels), labels)

    def records(self, ids: np.ndarray, labels=None) -> np.ndarray:
        """(n, record_len) int32 records of colour ids (n, H*W), with class indices (n,) when labelled."""
        ids = np.asarray(ids, dtype=np.int32).reshape(-1, self.pixels_per_image)
        n = len(ids)
        if self.labelled and labels is None:
            raise TokenizerError("this tokenizer has classes: give a label per image")
        parts = [np.full((n, 1), self.bos_id, np.int32)]
        if self.labelled:
            parts.append((self.label_offset + np.asarray(labels, dtype=np.int64)).astype(np.int32)[:, None])
        parts += [ids, np.full((n, 1), self.eos_id, np.int32)]
        return np.concatenate(parts, axis=1)

    # ---- the text interface -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if text and text.strip() and not self._warned:
            self._warned = True
            warnings.warn("an image tokenizer does not encode text; the prompt is ignored", stacklevel=2)
        return []

    def decode(self, ids) -> str:
        """A text picture of the pixel tokens (rows of W characters, brightness on RAMP); a label
        token becomes `[NAME]`, `<end>` a blank line."""
        out, row = [], []
        for i in self._check_ids(ids):
            if i < self.num_colours:
                level = int(self.palette[i].astype(np.int64).mean() * len(RAMP) // 256)
                row.append(RAMP[level])
                if len(row) == self.width:
                    out.append("".join(row))
                    row = []
            elif i < self.bos_id:
                out.append(f"[{self.classes[i - self.label_offset]}]")
            elif i == self.eos_id:
                out.append("")
        if row:
            out.append("".join(row))
        return "\n".join(out)

    # ---- JSON ---------------------------------------------------------------------------------
    def _to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "channels": self.channels,
                "palette": self.palette.tolist(), "classes": self.classes}

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        height, width = field(d, "height", int, path), field(d, "width", int, path)
        palette, classes = field(d, "palette", list, path), field(d, "classes", list, path)
        channels = field(d, "channels", int, path)
        try:
            arr = np.asarray(palette, dtype=np.int64)
            if arr.ndim != 2 or arr.shape[1] != channels:
                raise TokenizerError(f"the palette is not a list of {channels}-channel colours")
            return cls(height, width, arr, classes)
        except (TokenizerError, ValueError, TypeError) as exc:
            raise TokenizerFileError(f"{path}: {exc}; the file is corrupt, re-create it") from None
