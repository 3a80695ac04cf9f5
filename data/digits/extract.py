"""Re-create data/digits/{train,test}/<digit>/NNNN.png from scikit-learn's bundled copy of the UCI
"Optical Recognition of Handwritten Digits" test set (sklearn/datasets/data/digits.csv.gz).

Run once, with scikit-learn installed (the [bench] extra): `.venv/bin/python data/digits/extract.py`.
Each row is 64 pixels in 0..16 and the digit; a pixel v is stored as the 8-bit gray round(v * 255 / 16),
so a 17-level grayscale tokenizer reads every pixel back exactly. Image i goes to test/ when
i % 5 == 4 (360 images), else to train/ (1,437): a fixed, documented split.
"""
import gzip
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    import sklearn.datasets  # noqa: PLC0415 (optional: scikit-learn, the [bench] extra)

    src = os.path.join(os.path.dirname(sklearn.datasets.__file__), "data", "digits.csv.gz")
    with gzip.open(src, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (1797, 65): 64 pixels then the label
    for i, row in enumerate(rows):
        pixels = np.rint(row[:64].reshape(8, 8) * 255 / 16).astype(np.uint8)
        split = "test" if i % 5 == 4 else "train"
        folder = os.path.join(HERE, split, str(int(row[64])))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(pixels, "L").save(os.path.join(folder, f"{i:04d}.png"), optimize=True)
    print(f"{len(rows)} images written under {HERE}")


if __name__ == "__main__":
    main()
