"""Language identification with py3langid's model (langid.py's naive Bayes over byte n-grams, maintained as
py3langid: 140 languages, ISO 639 codes, two letters where there is one; the model ships inside the package as
a NumPy archive, so nothing is downloaded and nothing is unpickled).

py3langid walks the text's bytes in a Python loop and converts its float16 table with NumPy (about 0.8 ms per
1,000 characters); here the walk and the scoring are Numba kernels (cllm/data/filters/textstats.py dfa_features,
nb_classify) over the same model arrays, computing py3langid's scores (log(1 + count) times the features'
log-probabilities, plus the prior; probabilities normalized over sqrt(bytes)): tests/test_filters.py checks that
the two agree.

A document's language is that of a sample of its text (SAMPLE characters from its start, past its first
line when that is short: a title): a page's language shows in its first paragraphs.
"""
from __future__ import annotations

import math
import unicodedata

import numpy as np

from cllm.data.filters.textstats import dfa_features, nb_classify
from cllm.errors import DataError

SAMPLE = 500
HALF_TO_FLOAT = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
_model_arrays = None


def _model():
    """py3langid's identifier, loaded once (about 0.4 s: only a prepare that detects languages pays it), and
    its automaton as arrays for dfa_features."""
    global _model_arrays
    if _model_arrays is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier  # noqa: PLC0415 (costly: loads the model)

        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        _model_arrays = (ident, np.frombuffer(ident.tk_nextmove, np.uint32),
                         np.asarray(ident._rowbase, np.int64), np.asarray(ident.tk_output, np.int64),
                         np.ascontiguousarray(ident.nb_ptc).view(np.uint16), HALF_TO_FLOAT,
                         np.asarray(ident.nb_pc, np.float32),
                         np.asarray(ident._alias_pairs, np.int64).reshape(-1, 2))
    return _model_arrays


def known_languages() -> list[str]:
    return sorted(set(_model()[0].nb_classes))


def parse_languages(spec: str) -> tuple[str, ...]:
    """--languages "en,fr" as ("en", "fr"); "" is every language (no filter). An unknown code is a DataError."""
    codes = tuple(dict.fromkeys(c.strip().lower() for c in (spec or "").split(",") if c.strip()))
    if not codes:
        return ()
    known = set(known_languages())
    bad = [c for c in codes if c not in known]
    if bad:
        raise DataError(f"unknown language code(s) {', '.join(bad)} in --languages; use ISO 639 codes, e.g. "
                        f"--languages en,fr (known: {', '.join(sorted(known))})")
    return codes


def classify(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of text's language, as py3langid's classify with norm_probs gives it."""
    ident, nextmove, rowbase, output, table, lut, prior, alias = _model()
    if text.isupper():
        text = text.lower()
    data = unicodedata.normalize("NFC", text).encode("utf-8", "surrogatepass")
    idx, counts = dfa_features(nextmove, rowbase, output, np.frombuffer(data, np.uint8))
    best, prob = nb_classify(idx, counts, table, lut, prior, 1.0 / math.sqrt(len(data) or 1), alias)
    return ident.nb_classes[best], float(prob)


def detect(doc: str) -> tuple[str, float]:
    """classify() of doc's sample (the module doc)."""
    start = 0
    first = doc.find("\n")
    if 0 <= first < 80 and len(doc) > SAMPLE:  # a short first line: a title, often a name
        start = first + 1
    return classify(doc[start:start + SAMPLE])
