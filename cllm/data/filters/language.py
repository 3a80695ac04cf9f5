"""Language identification with py3langid's model (langid.py's naive Bayes over byte n-grams, maintained as
py3langid: 140 languages, ISO 639 codes, two letters where there is one; the model ships inside the package as
a NumPy archive, so nothing is downloaded and nothing is unpickled).

py3langid walks the text's bytes in a Python loop and converts its float16 table with NumPy (about 0.8 ms per
1,000 characters); here the walk and the scoring are Numba kernels (cllm/data/filters/textstats.py
classify_batch, nb_classify: a batch of texts at once) over the same model arrays, computing py3langid's scores
(log(1 + count) times the features' log-probabilities, plus the prior; probabilities normalized over
sqrt(bytes)): tests/test_filters.py checks that the two agree.

A document's language is that of a sample of its text (SAMPLE characters from its start, past its first
line when that is short: a title): a page's language shows in its first paragraphs.
"""
from __future__ import annotations

import unicodedata

import numpy as np

from cllm.data.filters.textstats import classify_batch, pack
from cllm.errors import DataError

SAMPLE = 500
_model_arrays = None


def _model():
    """py3langid's identifier, loaded once (about 0.4 s: only a prepare that detects languages pays it), and
    its automaton and tables as arrays for classify_batch."""
    global _model_arrays
    if _model_arrays is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier  # noqa: PLC0415 (costly: loads the model)

        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        table = np.ascontiguousarray(ident.nb_ptc).view(np.uint16)
        exponent = (table >> 10) & 31
        if not ((exponent > 0) & (exponent < 31)).all():  # nb_classify's conversion is for normal numbers only
            raise DataError("py3langid's model holds float16 zeros, subnormals or infinities: this version of "
                            "py3langid is not supported; install py3langid 0.4 or later (pyproject.toml)")
        _model_arrays = (ident, np.frombuffer(ident.tk_nextmove, np.uint32),
                         np.asarray(ident._rowbase, np.int64), np.asarray(ident.tk_output, np.int64), table,
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


def _normalize(text: str) -> str:
    """What the model reads of a text (in UTF-8): NFC, lowercased when all upper case (as py3langid)."""
    if text.isupper():
        text = text.lower()
    return unicodedata.normalize("NFC", text)


def classify_many(texts: list[str]) -> list[tuple[str, float]]:
    """(ISO 639 code, probability) of each text's language, as py3langid's classify with norm_probs gives it:
    one kernel call for them all, the texts spread over the cores."""
    ident, nextmove, rowbase, output, table, prior, alias = _model()
    buf, offsets = pack([_normalize(t) for t in texts])
    best = np.empty(len(texts), np.int64)
    prob = np.empty(len(texts), np.float64)
    classify_batch(nextmove, rowbase, output, table, prior, alias, buf, offsets, best, prob)
    return [(ident.nb_classes[b], float(p)) for b, p in zip(best.tolist(), prob.tolist())]


def classify(text: str) -> tuple[str, float]:
    """classify_many of one text."""
    return classify_many([text])[0]


def sample(doc: str) -> str:
    """The part of doc whose language is detected (the module doc)."""
    start = 0
    first = doc.find("\n")
    if 0 <= first < 80 and len(doc) > SAMPLE:  # a short first line: a title, often a name
        start = first + 1
    return doc[start:start + SAMPLE]


def detect(doc: str) -> tuple[str, float]:
    """classify() of doc's sample (the module doc)."""
    return classify(sample(doc))
