"""BERT's normalizer and pre-tokenizer, character for character as HuggingFace `tokenizers`'
BertNormalizer and BertPreTokenizer (steps 1-5 of cllm/tokenizers/wordpiece.py's docstring).

Unicode versions. HuggingFace's Rust crates classify characters by older (categories) or newer
(lowercase) Unicode tables than Python 3.11's unicodedata (14.0). The few hundred code points where
they disagree were found by passing every code point through `tokenizers` 0.23 one at a time; they
are listed below as HF_* so CLLM follows HuggingFace on all of them. tests/test_wordpiece.py checks
all 1.1M code points against `tokenizers` at once.
"""
import re
import unicodedata

CJK = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF), (0x2A700, 0x2B81F),
       (0x2B920, 0x2CEAF), (0x2F800, 0x2FA1F))
# where HuggingFace's tables differ from Python's unicodedata 14.0 (see the module docstring)
HF_KEEP_FORMAT = ((0x890, 0x891), (0x8E2, 0x8E2), (0x110CD, 0x110CD), (0x13430, 0x13438))  # Cf kept by clean text
HF_NOT_MN = (  # Mn characters that strip_accents keeps
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8E1), (0x9FE, 0x9FE), (0xAFA, 0xAFF), (0xB55, 0xB55), (0xC04, 0xC04),
    (0xC3C, 0xC3C), (0xD00, 0xD00), (0xD3B, 0xD3C), (0xD81, 0xD81), (0xEBA, 0xEBA), (0x180F, 0x180F), (0x1885, 0x1886),
    (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFB), (0xA82C, 0xA82C), (0xA8C5, 0xA8C5), (0xA8FF, 0xA8FF), (0xA9BD, 0xA9BD),
    (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070),
    (0x11073, 0x11074), (0x110C2, 0x110C2), (0x111C9, 0x111C9), (0x111CF, 0x111CF), (0x1123E, 0x1123E),
    (0x1133B, 0x1133B), (0x11438, 0x1143F), (0x11442, 0x11444), (0x11446, 0x11446), (0x1145E, 0x1145E),
    (0x1182F, 0x11837), (0x11839, 0x1183A), (0x1193B, 0x1193C), (0x1193E, 0x1193E), (0x11943, 0x11943),
    (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0), (0x11A01, 0x11A0A), (0x11A33, 0x11A38),
    (0x11A3B, 0x11A3E), (0x11A47, 0x11A47), (0x11A51, 0x11A56), (0x11A59, 0x11A5B), (0x11A8A, 0x11A96),
    (0x11A98, 0x11A99), (0x11C30, 0x11C36), (0x11C38, 0x11C3D), (0x11C3F, 0x11C3F), (0x11C92, 0x11CA7),
    (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36), (0x11D3A, 0x11D3A),
    (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47), (0x11D90, 0x11D91), (0x11D95, 0x11D95),
    (0x11D97, 0x11D97), (0x11EF3, 0x11EF4), (0x16F4F, 0x16F4F), (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D),
    (0x1CF30, 0x1CF46), (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021), (0x1E023, 0x1E024),
    (0x1E026, 0x1E02A), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF), (0x1E944, 0x1E94A))
HF_MN = ((0x1734, 0x1734),)  # Mc in Unicode 14, a nonspacing mark to HuggingFace: stripped
# starters (combining class 0, no decomposition) to HuggingFace's NFD, not to Python's: NFD must not
# reorder marks across them (found by NFD of each mark next to marks of class 1, 230 and 240)
HF_NFD_STARTERS = (
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C), (0xD3B, 0xD3C), (0xEBA, 0xEBA),
    (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA), (0xA82C, 0xA82C), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC),
    (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070), (0x1133B, 0x1133B), (0x1145E, 0x1145E),
    (0x11839, 0x1183A), (0x11938, 0x11938), (0x1193D, 0x1193E), (0x11943, 0x11943), (0x119E0, 0x119E0),
    (0x11A34, 0x11A34), (0x11A47, 0x11A47), (0x11A99, 0x11A99), (0x11D42, 0x11D42), (0x11D44, 0x11D45),
    (0x11D97, 0x11D97), (0x16FF0, 0x16FF1), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF))
HF_NOT_SPACE = ((0x1C, 0x1F),)  # Python's isspace() says yes, Rust's is_whitespace() no
HF_PUNCT = ((0x166D, 0x166D), (0x111C9, 0x111C9))  # punctuation to HuggingFace, not P* in Unicode 14
HF_NOT_PUNCT = (  # P* in Unicode 14, not punctuation to HuggingFace
    (0x61D, 0x61D), (0x9FD, 0x9FD), (0xA76, 0xA76), (0xC77, 0xC77), (0xC84, 0xC84), (0x1B7D, 0x1B7E), (0x2E43, 0x2E4F),
    (0x2E52, 0x2E5D), (0x10EAD, 0x10EAD), (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x1144B, 0x1144F),
    (0x1145A, 0x1145B),
    (0x1145D, 0x1145D), (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1183B, 0x1183B), (0x11944, 0x11946),
    (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C), (0x11A9E, 0x11AA2), (0x11C41, 0x11C45),
    (0x11C70, 0x11C71), (0x11EF7, 0x11EF8), (0x11FFF, 0x11FFF), (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A),
    (0x16FE2, 0x16FE2), (0x1E95E, 0x1E95F))
# lowercase mappings newer than Unicode 14 (unassigned to Python 3.11): (first, last, offset) or a single target
HF_LOWER = ((0x1C89, 0x1C89, 1), (0xA7CB, 0xA7CB, 0x264 - 0xA7CB), (0xA7CC, 0xA7CC, 1), (0xA7CE, 0xA7CE, 1),
            (0xA7D2, 0xA7D2, 1), (0xA7D4, 0xA7D4, 1), (0xA7DA, 0xA7DA, 1), (0xA7DC, 0xA7DC, 0x19B - 0xA7DC),
            (0x10D50, 0x10D65, 0x20), (0x16EA0, 0x16EB8, 0x1B))

_TABLES = None


def _char_class(codes) -> str:
    """A regular-expression character class of the sorted code points `codes`, as ranges."""
    parts, run = [], None
    for c in codes:
        if run and c == run[1] + 1:
            run[1] = c
        else:
            if run:
                parts.append(run)
            run = [c, c]
    if run:
        parts.append(run)
    esc = "\\U{:08x}".format
    return "[" + "".join(esc(a) if a == b else esc(a) + "-" + esc(b) for a, b in parts) + "]"


def _tables() -> dict:
    """The compiled character classes, made once per process from unicodedata plus the HF_* lists."""
    global _TABLES
    if _TABLES is None:
        def codes(ranges):
            return {c for lo, hi in ranges for c in range(lo, hi + 1)}

        keep, not_mn = codes(HF_KEEP_FORMAT), codes(HF_NOT_MN)
        not_punct, not_space = codes(HF_NOT_PUNCT), codes(HF_NOT_SPACE)
        control, marks, punct, space = [0, 0xFFFD], sorted(codes(HF_MN)), sorted(codes(HF_PUNCT)), []
        punct += [c for c in range(33, 127) if not chr(c).isalnum()]
        for c, cat in enumerate(map(unicodedata.category, map(chr, range(0x110000)))):
            if cat[0] == "C":
                if cat != "Cn" and c not in keep and c not in (9, 10, 13):
                    control.append(c)
            elif cat == "Mn":
                if c not in not_mn:
                    marks.append(c)
            elif cat[0] == "P" and c >= 127 and c not in not_punct:
                punct.append(c)
        space = [c for c in range(0x3001) if chr(c).isspace() and c not in not_space]  # none above U+3000
        control, marks, punct = sorted(set(control)), sorted(set(marks)), sorted(set(punct))
        p, s = _char_class(punct), _char_class(space)
        lower = {c: chr(c + off) for lo, hi, off in HF_LOWER for c in range(lo, hi + 1)}
        _TABLES = {
            "control": re.compile(_char_class(control)),
            "marks": re.compile(_char_class(marks)),
            "space": re.compile(_char_class(space)),
            "nfd_starters": re.compile("(" + _char_class(sorted(codes(HF_NFD_STARTERS))) + ")"),
            "cjk": re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in CJK) + "]"),
            "words": re.compile(f"[^{s[1:-1]}{p[1:-1]}]+|{p}"),
            # the same for ASCII text, 2.5x faster than the full classes (no \s: it holds \x1c-\x1f)
            "ascii_words": re.compile(r"[^\t\n\x0b\x0c\r !-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]"),
            "lower_fix": re.compile(_char_class(sorted(lower))),
            "lower_map": str.maketrans(lower),
        }
    return _TABLES


def bert_normalize(text: str, clean_text: bool = True, cjk: bool = True, strip_accents: bool = True,
                   lowercase: bool = True, spaces: bool = True) -> str:
    """HuggingFace's BertNormalizer (steps 1-4 of cllm/tokenizers/wordpiece.py's docstring). `spaces=False` leaves out
    clean text's turning every whitespace character into " " (the words are the same either way)."""
    t = _tables()
    ascii_text = text.isascii()
    if clean_text:
        text = t["control"].sub("", text)
        if spaces:
            text = t["space"].sub(" ", text)
    if not ascii_text:
        if cjk:
            text = t["cjk"].sub(r" \g<0> ", text)
        if strip_accents:
            if t["nfd_starters"].search(text):  # NFD between them, each kept as it is
                parts = t["nfd_starters"].split(text)
                text = "".join(x if k % 2 else unicodedata.normalize("NFD", x) for k, x in enumerate(parts))
            else:
                text = unicodedata.normalize("NFD", text)
            text = t["marks"].sub("", text)
    if lowercase:
        if ascii_text:
            return text.lower()
        text = text.replace("\u03a3", "\u03c3").lower()  # Python's lower() alone would give a final "ς"
        if t["lower_fix"].search(text):
            text = text.translate(t["lower_map"])
    return text


def bert_words(text: str) -> list[str]:
    """HuggingFace's BertPreTokenizer: whitespace-separated words, each punctuation character alone."""
    return _tables()["ascii_words" if text.isascii() else "words"].findall(text)
