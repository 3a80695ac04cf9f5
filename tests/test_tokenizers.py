"""Tokenizers: hand-checked BPE merges and ids, a pure-Python reference for the Numba trainer,
round trips (hypothesis), save/load, HuggingFace export parity, and bad tokenizer files."""

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.errors import TokenizerError
from cllm.kernels import bpe_split
from cllm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer, load_tokenizer, train_tokenizer
from cllm.tokenizers.base import TokenizerFileError, VocabSizeError, text_pieces
from cllm.tokenizers.pre_split import PATTERNS, char_classes

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
SAMPLE = SHAKESPEARE[:20000] + "\nNaïve café — 日本語のテキスト 😀👍🏽 e\u0301 ﬁ 12345 don't WE'LL\r\n\ttabs\n"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(SAMPLE, 512, progress=False)


# ---------------------------------------------------------------------------------------------
# BPE by hand


def test_bpe_wikipedia_example_exact_merges_and_ids():
    # "aaabdaaabac" is one pre-split chunk. Pair counts: aa 4 (overlapping), ab 2, others 1.
    # 1) (a,a) -> 256: a a a b d a a a b a c  ->  [256 a b d 256 a b a c]
    # 2) counts: (256,a) 2, (a,b) 2 tie; the smaller pair (97,98) wins -> 257 = "ab":
    #    [256 257 d 256 257 a c]
    # 3) (256,257) 2 -> 258 = "aaab": [258 d 258 a c] = [258, 100, 258, 97, 99]
    tok = BPETokenizer.train("aaabdaaabac", 256 + 3, special_tokens=[], progress=False)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.token_bytes(258) == b"aaab"
    assert tok.vocab_size == 259
    assert tok.decode([258, 100]) == "aaabd"


def test_bpe_pre_split_keeps_merges_inside_chunks():
    # GPT-4 pattern splits "ab ab ab" into "ab", " ab", " ab": (a,b) occurs 3 times -> 256,
    # then (" ", 256) occurs twice -> 257. No merge may cross a chunk boundary ("b " never merges).
    tok = BPETokenizer.train("ab ab ab", 256 + 2 + 1, progress=False)
    assert tok.merges == [(97, 98), (32, 256)]
    assert tok.encode("ab ab ab") == [256, 257, 257]
    assert tok.special_tokens == {"<|endoftext|>": 258}
    assert tok.bos_id == tok.eos_id == 258 and tok.unk_id is None and tok.pad_id is None
    assert tok.encode_with_special("ab") == [258, 256, 258]


def test_bpe_merge_to_existing_bytes_reuses_the_id():
    # merges: (b,c)->256 "bc", (a,b)->257 "ab", (257,c)->258 "abc", (a,256) gives "abc" again:
    # it reuses 258 (as HuggingFace's trainer does), so vocab strings stay unique.
    tok = BPETokenizer([(98, 99), (97, 98), (257, 99), (97, 256)], special_tokens=[])
    assert tok.vocab_size == 259
    # encoding "abc": (b,c) has the lowest rank -> [a, 256]; then (a,256) rank 3 -> [258]
    assert tok.encode("abc") == [258]
    assert tok.encode("abd") == [257, 100]


def test_bpe_special_tokens_only_matched_when_allowed(bpe):
    eot = bpe.special_tokens["<|endoftext|>"]
    text = "hi<|endoftext|>there"
    assert eot not in bpe.encode(text)
    ids = bpe.encode(text, allowed_special="all")
    assert ids.count(eot) == 1
    assert bpe.decode(ids) == text
    bpe2 = BPETokenizer(bpe.merges, special_tokens=["<|endoftext|>", "<|pad|>"])
    assert bpe2.pad_id == bpe2.vocab_size - 1


def test_bpe_vocab_size_and_determinism(bpe):
    assert bpe.vocab_size == 512
    again = BPETokenizer.train(SAMPLE, 512, progress=False)
    assert again.merges == bpe.merges


# ---------------------------------------------------------------------------------------------
# the Numba trainer against a straightforward pure-Python one (minbpe's algorithm, same rules)


def reference_train(text, vocab_size, pattern=PATTERNS["gpt4"]):
    counts = Counter(regex.findall(pattern, text))
    words = [list(c.encode("utf-8")) for c in counts]
    freq = list(counts.values())
    vocab = {i: bytes([i]) for i in range(256)}
    index = {v: k for k, v in vocab.items()}
    merges = []
    next_id = 256
    while next_id < vocab_size:
        pairs = Counter()
        for w, n in zip(words, freq):
            for p in zip(w, w[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], -p[0], -p[1]))
        b = vocab[best[0]] + vocab[best[1]]
        new = index.get(b)
        if new is None:
            new = next_id
            next_id += 1
            vocab[new] = b
            index[b] = new
        merges.append(best)
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


@FAST
@given(st.text(alphabet="abcab c\n.é", max_size=300), st.integers(257, 300))
def test_numba_trainer_matches_reference(text, vocab_size):
    if not text:
        return
    expected = reference_train(text, vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ran out of pairs" is expected for short texts
        tok = BPETokenizer.train(text, vocab_size, special_tokens=[], progress=False)
    assert tok.merges == expected


def reference_encode(tok, text):
    """Apply merges to each chunk: lowest-rank pair first, leftmost among equals."""
    rank = {}
    for r, (p, new) in enumerate(zip(tok.merges, tok._merge_new)):
        rank.setdefault(p, (r, new))
    out = []
    for chunk in regex.findall(tok.pattern, text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) > 1:
            cands = [(rank[p][0], i) for i, p in enumerate(zip(ids, ids[1:])) if p in rank]
            if not cands:
                break
            r, i = min(cands)
            ids[i : i + 2] = [rank[(ids[i], ids[i + 1])][1]]
        out += ids
    return out


@FAST
@given(st.text(max_size=200))
def test_bpe_encode_matches_reference_and_round_trips(bpe, text):
    ids = bpe.encode(text)
    assert ids == reference_encode(bpe, text)
    assert bpe.decode(ids) == text


@FAST
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=100)
    | st.lists(
        st.sampled_from(["😀", "👍🏽", "e\u0301", "\u200d", "﷽", "\U0010ffff", "\x00", "\r\n", " ", "ǅ", "\ufeff"]),
        max_size=30,
    ).map("".join)
)
def test_bpe_round_trip_any_unicode(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text
    assert bpe.decode(bpe.encode(text, allowed_special="all")) == text


def test_bpe_gpt2_pattern_round_trip():
    tok = BPETokenizer.train(SAMPLE, 300, pattern="gpt2", progress=False)
    assert tok.pattern == PATTERNS["gpt2"]
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    with pytest.raises(TokenizerError, match="invalid pre-split pattern"):
        BPETokenizer.train(SAMPLE, 300, pattern="(", progress=False)


# ---------------------------------------------------------------------------------------------
# HuggingFace export


def test_export_hf_gives_identical_ids(bpe, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    bpe.export_hf(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.get_vocab_size() == bpe.vocab_size
    for text in (SAMPLE, SHAKESPEARE[-5000:], "x<|endoftext|>y  \n\n  z", ""):
        assert hf.encode(text).ids == bpe.encode(text, allowed_special="all")

    @FAST
    @given(st.text(max_size=200))
    def parity(text):
        assert hf.encode(text).ids == bpe.encode(text, allowed_special="all")
        assert hf.decode(hf.encode(text).ids, skip_special_tokens=False) == text

    parity()


# ---------------------------------------------------------------------------------------------
# char and word


def test_char_tiny_shakespeare_has_65_ids():
    tok = CharTokenizer.train(SHAKESPEARE, progress=False)
    assert tok.vocab_size == 65
    assert tok.id_to_token(0) == "\n" and tok.id_to_token(1) == " "  # sorted: \n, space, !, ...
    assert tok.token_to_id("a") == 39  # 13 symbols, 26 capitals before the small letters
    assert tok.bos_id is tok.eos_id is tok.pad_id is tok.unk_id is None
    assert tok.encode_with_special("ab") == tok.encode("ab")
    assert tok.decode(tok.encode(SHAKESPEARE[:1000])) == SHAKESPEARE[:1000]


def test_char_unseen_characters_dropped_with_one_warning():
    tok = CharTokenizer.train("abc", progress=False)
    with pytest.warns(UserWarning, match="dropping 2 character") as rec:
        assert tok.encode("axbyc") == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert tok.encode("zz") == []
    assert len(rec) == 1
    assert tok.stats()["encoded_unknown"] == 4


def test_char_vocab_cap_keeps_most_frequent():
    tok = CharTokenizer.train("aaabbc", vocab_size=2, progress=False)
    assert tok._id_to_token == ["a", "b"]


def test_word_tokenizer_ids_ranking_and_decode():
    tok = WordTokenizer.train("the cat , the dog . a cat !", vocab_size=8, progress=False)
    # specials 0-4; counts: the 2, cat 2, then 1 each: "!" "," "." "a" "dog" (sorted by string)
    assert [tok.id_to_token(i) for i in range(8)] == ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "cat", "the", "!"]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.encode("the dog") == [6, 1]
    # 9 tokens, of which the, the, cat, cat, ! are known: 4 of 9 unknown
    assert tok.stats()["train"]["unknown_rate"] == pytest.approx(4 / 9)
    full = WordTokenizer.train("Hello, world! (It's me.)\nNext line: done.", vocab_size=100, progress=False)
    assert (
        full.decode(full.encode("Hello ,world !( It's me . )\nNext   line : done ."))
        == "Hello, world! (It's me.)\nNext line: done."
    )
    assert full.encode_with_special("Hello") == [2, full.token_to_id("Hello"), 3]


@FAST
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=120))
def test_word_round_trip_on_normalized_text(text):
    tok = WordTokenizer.train(text + " x", vocab_size=10_000, progress=False)
    ids = tok.encode(text)
    normal = tok.decode(ids)
    assert tok.encode(normal) == ids  # decoding gives text that encodes to the same ids
    assert tok.decode(tok.encode(normal)) == normal  # and normal form is a fixed point


def test_word_vocab_size_must_exceed_specials():
    with pytest.raises(VocabSizeError, match="special"):
        WordTokenizer.train("a b c", vocab_size=5, progress=False)
    with pytest.raises(VocabSizeError, match="256 byte ids"):
        BPETokenizer.train("a b c", vocab_size=256, progress=False)


# ---------------------------------------------------------------------------------------------
# files


@FAST
@given(st.text(max_size=80))
def test_save_load_gives_identical_ids_for_every_kind(tmp_path_factory, text):
    d = tmp_path_factory.mktemp("tok")
    for kind, size in (("word", 50), ("char", None), ("bpe", 300)):
        tok = train_tokenizer(kind, [SAMPLE[:3000], text], vocab_size=size, progress=False)
        tok.save(d / f"{kind}.json")
        back = load_tokenizer(d / f"{kind}.json")
        assert back.kind == kind and type(back) is type(tok)
        assert back.vocab_size == tok.vocab_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert back.encode(text) == tok.encode(text)
        assert back.stats()["train"] == tok.stats()["train"]


def test_bad_tokenizer_files(tmp_path, bpe):
    good = tmp_path / "good.json"
    bpe.save(good)
    d = json.loads(good.read_text())
    cases = {
        "missing.json": None,
        "garbage.json": b"\x00\x01 not json",
        "truncated.json": good.read_bytes()[:200],
        "hf.json": json.dumps({"version": "1.0", "model": {}}).encode(),
        "version.json": json.dumps({**d, "version": 99}).encode(),
        "kind.json": json.dumps({**d, "kind": "sentencepiece"}).encode(),
        "merges.json": json.dumps({**d, "merges": [[1, 2, 3]]}).encode(),
        "forward.json": json.dumps({**d, "merges": [[300, 1]]}).encode(),
        "nofield.json": json.dumps({k: v for k, v in d.items() if k != "merges"}).encode(),
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(TokenizerFileError) as info:
            load_tokenizer(tmp_path / name)
        assert str(tmp_path / name) in str(info.value), name
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        train_tokenizer("unigram", "text", 10)


def test_decode_rejects_bad_ids(bpe):
    with pytest.raises(TokenizerError, match="out of range|cannot decode"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(TokenizerError):
        bpe.id_to_token(-1)


def test_stats_report_training_and_encoding(bpe):
    s = bpe.stats()
    assert s["vocab_size"] == 512 and s["kind"] == "bpe" and s["train_coverage"] == 1.0  # bytes: nothing unknown
    assert s["train"]["characters"] == len(SAMPLE)
    # every training byte ends up in exactly one token: the counts add up to the encoded length
    assert s["train"]["tokens"] == len(bpe.encode(SAMPLE))
    assert s["train"]["top_tokens"][0][1] >= s["train"]["top_tokens"][-1][1]


# ---------------------------------------------------------------------------------------------
# the Numba pre-split must cut exactly where the `regex` pattern does

TRICKY = list("aZ1 \t\n\r'sSldvemtr.,!ſ_-9٣") + [
    "😀",
    "é",
    "\u0301",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\x0b",
    "\x85",
    "ǅ",
    "Ⅻ",
    "²",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TRICKY), max_size=25).map("".join) | st.text(max_size=40))
def test_numba_pre_split_matches_regex(text):
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    for name, gpt4 in (("gpt4", True), ("gpt2", False)):
        offs = bpe_split.split_offsets(cps, char_classes(), gpt4).tolist()
        assert [text[a:b] for a, b in zip(offs, offs[1:])] == regex.findall(PATTERNS[name], text), name


def test_custom_pattern_uses_the_regex_path_and_long_texts_span_buffers(bpe):
    custom = BPETokenizer(bpe.merges, pattern=r"\S+|\s+")
    text = SAMPLE * 3
    assert custom._gpt4 is None
    assert custom.decode(custom.encode(text)) == text
    assert custom.encode(text) == reference_encode(custom, text)
    long_run = "x" * 5000 + " " * 70000 + "end"
    assert bpe.encode(long_run) == reference_encode(bpe, long_run)
    # more than one output buffer (2**20 ids), and a chunk longer than a buffer
    long_text = SAMPLE * 60 + "\u00e9" * 300_000 + "end"
    assert bpe.encode(long_text) == reference_encode(bpe, long_text)


def test_lone_surrogate_is_a_clear_error(bpe):
    with pytest.raises(TokenizerError, match="lone surrogate"):
        bpe.encode("ok \ud800 no")


def test_regex_path_trains_the_same_merges_as_the_numba_path(bpe):
    # the same pattern in a non-capturing group is not recognised as built-in: the chunks are
    # then split by `regex` and counted by a Counter; the merges must come out identical
    wrapped = BPETokenizer.train(SAMPLE, 512, pattern="(?:" + PATTERNS["gpt4"] + ")", progress=False)
    assert wrapped._gpt4 is None and bpe._gpt4 is True
    assert wrapped.merges == bpe.merges
    assert wrapped.train_stats["distinct_chunks"] == bpe.train_stats["distinct_chunks"]
    assert wrapped.encode(SAMPLE) == bpe.encode(SAMPLE)


_PIECE_ALPHABET = list("ab Zé\n\n  .,'-1234\t\u00a0\u2019ßы字😀") + ["'s", "'ll", " x", "\n\n"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_PIECE_ALPHABET), max_size=400), st.integers(1, 40))
def test_text_pieces_give_the_ids_of_the_whole_text(bpe, parts, size):
    """prepare encodes big documents piece by piece: the cuts must never change a token."""
    text = "".join(parts)
    pieces = list(text_pieces(text, size))
    assert "".join(pieces) == text
    gpt2 = BPETokenizer(bpe.merges, pattern="gpt2")
    word = WordTokenizer(["a", "b", "ab", "Z"])
    for tok in (bpe, gpt2, word):
        whole = tok.encode(text)
        assert [i for p in pieces for i in tok.encode(p)] == whole
        for pat in [tok.pattern] if tok is not word else []:  # the regex itself agrees too
            assert [c for p in pieces for c in regex.findall(pat, p)] == regex.findall(pat, text)
    assert [i for a in bpe.encode_pieces(text) for i in a.tolist()] == bpe.encode(text)
