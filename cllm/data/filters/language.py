"""Language identification with py3langid (a maintained fork of langid.py: 97 languages, ISO 639-1 codes; its
model ships inside the package as a NumPy archive, so nothing is downloaded and nothing is unpickled).

A document's language is that of a sample of its text (SAMPLE characters from its start, past its first
line when that is short: a title): py3langid's cost grows with the text (about 0.25 ms per 1,000
characters), and a page's language shows in its first paragraph.
"""
from __future__ import annotations

from cllm.errors import DataError

SAMPLE = 600
_identifier = None


def _model():
    """py3langid's identifier, loaded once (about 0.4 s: only a prepare that detects languages pays it)."""
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier  # noqa: PLC0415 (costly: loads the model)

        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def known_languages() -> list[str]:
    return sorted(_model().nb_classes)


def parse_languages(spec: str) -> tuple[str, ...]:
    """--languages "en,fr" as ("en", "fr"); "" is every language (no filter). An unknown code is a DataError."""
    codes = tuple(dict.fromkeys(c.strip().lower() for c in (spec or "").split(",") if c.strip()))
    if not codes:
        return ()
    known = set(known_languages())
    bad = [c for c in codes if c not in known]
    if bad:
        raise DataError(f"unknown language code(s) {', '.join(bad)} in --languages; use ISO 639-1 codes, e.g. "
                        f"--languages en,fr (known: {', '.join(sorted(known))})")
    return codes


def detect(doc: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the language of doc's sample."""
    start = 0
    first = doc.find("\n")
    if 0 <= first < 80 and len(doc) > SAMPLE:  # a short first line: a title, often a name
        start = first + 1
    lang, score = _model().classify(doc[start:start + SAMPLE])
    return lang, float(score)
