"""Page bytes -> text, choosing the charset as browsers do (the HTML standard's precedence)."""
from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# <meta charset=x> and <meta http-equiv=Content-Type content="text/html; charset=x">
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([-\w.:]+)""", re.I)
# A declared charset is kept, its undecodable bytes replaced (as browsers do), when they are this rare: one,
# and one more per BAD_BYTES_PER bytes (a multibyte character cut in two by a truncated teaser); a wrong
# declaration breaks on most non-ASCII characters and falls through to the next source of truth.
BAD_BYTES_PER = 10_000


def _codec(label: str | None) -> str | None:
    """A Python codec name for a charset label, or None when unknown.

    As browsers do (WHATWG Encoding), latin-1 and ASCII labels mean windows-1252: pages that
    say iso-8859-1 routinely contain cp1252 quotes and dashes in 0x80-0x9F.
    """
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'").lower()).name
    except LookupError:
        return None
    if name in ("latin-1", "iso8859-1", "ascii"):
        return "cp1252"
    if name.startswith("utf-16") or name == "utf-32":
        return "utf-8"  # a meta/header claiming UTF-16 on bytes we already read as ASCII-compatible
    return name


def decode_html(data: bytes | str, http_charset: str | None = None) -> tuple[str, str]:
    """Decode page bytes to text; returns (text, codec used).

    Precedence follows the HTML standard: a byte-order mark wins, then the HTTP header's charset,
    then a <meta> charset in the first 4 KB, then strict UTF-8, then charset-normalizer's guess.
    """
    if isinstance(data, str):
        return data.lstrip("\ufeff"), "str"
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(enc, "replace"), enc
    meta = _META_CHARSET.search(data[:4096])
    for label in (http_charset, meta.group(1).decode("ascii", "ignore") if meta else None):
        enc = _codec(label)
        if enc:
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                text = data.decode(enc, "replace")
                if text.count("\ufffd") <= 1 + len(data) // BAD_BYTES_PER:
                    return text, enc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        best = from_bytes(data[:200_000]).best()
        if best is not None:
            return data.decode(best.encoding, "replace"), best.encoding
    except Exception:  # noqa: BLE001 - detection is a best effort; cp1252 below never fails
        pass
    return data.decode("cp1252", "replace"), "cp1252"
