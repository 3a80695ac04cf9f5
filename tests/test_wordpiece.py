"""WordPiece: the Numba trainer against a plain-Python reference of the likelihood rule, ids equal to
HuggingFace `tokenizers` (its BertNormalizer + BertPreTokenizer + WordPiece) on every code point and
on hypothesis text, compression against its WordPieceTrainer, files (ours, tokenizer.json, vocab.txt)."""
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.errors import TokenizerError
from cllm.tokenizers import load_tokenizer, train_tokenizer
from cllm.tokenizers.base import VocabSizeError
from cllm.tokenizers.imports import import_tokenizer
from cllm.tokenizers.wordpiece import WordPieceTokenizer, bert_normalize, bert_words

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
ODD = "Naïve CAFÉ — 日本語のテキスト 😀 e\u0301 ﬁ 12345 don't ΣΑΣ İstanbul\x00\x07\u200b\r\n\ttabs [MASK]x[SEP]"
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL_CHARS = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


def reference_train(text, vocab_size, specials=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")):
    """WordPiece training as written in the HuggingFace course: recount everything, merge the pair
    with the highest count(ab) / (count(a) count(b)); ties to the smaller (id a, id b)."""
    counts = Counter(bert_words(bert_normalize(text)))
    splits = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}
    alphabet = sorted({t for s in splits.values() for t in s}, key=lambda t: (ord(t[-1]), len(t)))
    tokens = list(specials) + alphabet
    ids = {t: i for i, t in enumerate(tokens)}
    while len(tokens) < vocab_size:
        sym, pair = Counter(), Counter()
        for w, f in counts.items():
            s = splits[w]
            for t in s:
                sym[t] += f
            for a, b in zip(s, s[1:]):
                pair[a, b] += f
        if not pair:
            break
        a, b = max(pair, key=lambda p: (pair[p] / (sym[p[0]] * sym[p[1]]), -ids[p[0]], -ids[p[1]]))
        new = a + b[2:]
        if new not in ids:
            ids[new] = len(tokens)
            tokens.append(new)
        for w in counts:
            s, out, i = splits[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return tokens


def test_trainer_equals_the_reference():
    text = SHAKESPEARE[:8000] + ODD
    tok = WordPieceTokenizer.train(text, 300, score="likelihood", progress=False)
    assert tok._id_to_token == reference_train(text, 300)
    assert tok.vocab_size == 300 and tok.train_stats["merges"] >= 300 - 5 - tok.train_stats["alphabet"]


def test_greedy_longest_match_by_hand():
    tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a", "##ff",
                              "##a", "##b", "##l", "##e", ","], lowercase=True)
    assert tok.encode("Unaffable, un") == [5, 6, 7, 14, 5]  # un ##aff ##able , un
    assert tok.encode("unx affable") == [1, 8, 9, 7]  # "unx": no "##x" -> [UNK]; a ##ff ##able
    assert tok.encode("[MASK]") == [1, 1, 1] and tok.encode("[MASK]", allowed_special="all") == [4]
    assert tok.decode([5, 6, 7, 14, 5]) == "unaffable , un"
    long = WordPieceTokenizer(["[UNK]", "a", "##a"], max_word_chars=3, special_tokens=["[UNK]"])
    assert long.encode("aaa aaaa") == [1, 2, 2, 0]
    assert long.unk_id == 0 and long.bos_id is None


def test_normalizer_and_pre_tokenizer_equal_hf_on_every_code_point():
    tk = pytest.importorskip("tokenizers", reason="HuggingFace `tokenizers` (test extra) is the reference")
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    for clean, cjk, strip, lower in ((True, True, True, True), (False, False, False, False)):
        hf = BertNormalizer(clean_text=clean, handle_chinese_chars=cjk, strip_accents=strip, lowercase=lower)
        text = ALL_CHARS + " ΣΑΣ σ. x\x1cy" + ALL_CHARS[:0x30000:-7]
        norm = hf.normalize_str(text)
        assert bert_normalize(text, clean, cjk, strip, lower) == norm
        assert bert_words(norm) == [w for w, _ in BertPreTokenizer().pre_tokenize_str(norm)]
    ascii_text = "".join(map(chr, range(128))) * 2 + " x\x1cy\x00z"  # bert_words' ASCII-only path
    assert bert_words(ascii_text) == [w for w, _ in BertPreTokenizer().pre_tokenize_str(ascii_text)]
    assert tk is not None


@pytest.fixture(scope="module")
def trained():
    return WordPieceTokenizer.train(SHAKESPEARE[:200000] + ODD, 1500, progress=False)


@pytest.mark.parametrize("options", [{}, {"lowercase": False, "strip_accents": False},
                                     {"lowercase": True, "strip_accents": False}])
def test_same_ids_as_hf_wordpiece(trained, tmp_path, options):
    tk = pytest.importorskip("tokenizers", reason="HuggingFace `tokenizers` (test extra) is the reference")
    tok = WordPieceTokenizer(trained._id_to_token, **options)
    tok.export_hf(tmp_path / "tokenizer.json")
    hf = tk.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in (SHAKESPEARE[-20000:], ODD, "", "x" * 150 + " ok"):
        assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids
    again = import_tokenizer(str(tmp_path / "tokenizer.json"))
    assert again._id_to_token == tok._id_to_token and again.encode(ODD) == tok.encode(ODD)

    @FAST
    @given(st.text(max_size=200) | st.text(alphabet=st.sampled_from("aeiouAÉΣ日 ,.#[]\u0301\u0300\x00"),
                                           max_size=60))
    def parity(text):
        assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids

    parity()


def test_compression_of_both_scores_against_hf_trainer():
    tk = pytest.importorskip("tokenizers", reason="HuggingFace `tokenizers` (test extra) is the reference")
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    train, held = SHAKESPEARE[:300000], SHAKESPEARE[-100000:]
    hf = tk.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=2000, show_progress=False, special_tokens=specials)
    hf.train_from_iterator([train], trainer)
    n_bytes = len(held.encode("utf-8"))
    hf_rate = len(hf.encode(held, add_special_tokens=False).ids) / n_bytes
    rate = {s: len(WordPieceTokenizer.train(train, 2000, score=s, progress=False).encode(held)) / n_bytes
            for s in ("frequency", "likelihood")}
    print(f"tokens per byte: HF WordPieceTrainer {hf_rate:.4f}, CLLM frequency {rate['frequency']:.4f}, "
          f"likelihood {rate['likelihood']:.4f}")
    assert abs(rate["frequency"] / hf_rate - 1) < 0.02
    assert rate["likelihood"] > rate["frequency"]  # the likelihood rule spends its merges on rare words


def test_the_cli_default_score_is_frequency_and_compresses_as_hf(tmp_path):
    """`tokenizer train --kind wordpiece` merges by frequency unless told otherwise: the same file as
    `--score frequency`, and on Shakespeare a token count within 10% of HuggingFace's WordPieceTrainer at
    the same vocabulary size (the likelihood rule, the default before, gave 2.2x HF's count)."""
    tk = pytest.importorskip("tokenizers", reason="HuggingFace `tokenizers` (test extra) is the reference")
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    text = SHAKESPEARE[:200000]
    corpus = tmp_path / "s.txt"
    corpus.write_text(text, encoding="utf-8")
    files = {}
    for name, extra in (("default", []), ("frequency", ["--score", "frequency"])):
        files[name] = tmp_path / f"{name}.json"
        r = run_cli("tokenizer", "train", corpus, "--kind", "wordpiece", "--vocab-size", "1000", "--out", files[name],
                    "--no-progress", *extra)
        assert r.returncode == 0, r.stderr
    assert files["default"].read_text(encoding="utf-8") == files["frequency"].read_text(encoding="utf-8")
    hf = tk.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.train_from_iterator([text], trainers.WordPieceTrainer(
        vocab_size=1000, show_progress=False, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    n_hf = len(hf.encode(text, add_special_tokens=False).ids)
    n = len(load_tokenizer(files["default"]).encode(text))
    print(f"tokens on {len(text):,} characters of Shakespeare at 1000 ids: HF WordPieceTrainer {n_hf:,}, "
          f"CLLM's default {n:,}")
    assert abs(n / n_hf - 1) < 0.10, (n, n_hf)


def test_files_round_trip(trained, tmp_path):
    trained.save(tmp_path / "wp.json")
    again = load_tokenizer(tmp_path / "wp.json")
    assert again.encode(SHAKESPEARE[:5000]) == trained.encode(SHAKESPEARE[:5000])
    trained.export_vocab_txt(tmp_path / "vocab.txt")
    from_txt = import_tokenizer(str(tmp_path / "vocab.txt"))  # an uncased vocabulary: lowercase
    assert from_txt.lowercase and from_txt.encode(ODD) == trained.encode(ODD)
    assert from_txt.bos_id == trained.token_to_id("[CLS]") and from_txt.eos_id == trained.token_to_id("[SEP]")
    assert trained.decode(trained.encode("First Citizen: hello")) == "first citizen : hello"


def test_train_errors_and_registry():
    with pytest.raises(VocabSizeError):
        WordPieceTokenizer.train("abc", 5, progress=False)
    with pytest.raises(TokenizerError, match="empty"):
        WordPieceTokenizer.train(["", "  "], 100, progress=False)
    with pytest.raises(TokenizerError, match="score"):
        WordPieceTokenizer.train("abc", 100, score="best", progress=False)
    tok = train_tokenizer("wordpiece", ["hello world", "hello there"], 30, progress=False)
    assert tok.kind == "wordpiece" and tok.encode("hello") == [tok.token_to_id("hello")]


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, check=False)


def test_cli_train_export_and_prepare(tmp_path):
    import json

    from cllm.data import prepare_dataset
    from cllm.data.tokenfile import read_token_file

    corpus = tmp_path / "c.txt"
    corpus.write_text(SHAKESPEARE[:30000], encoding="utf-8")
    tok = tmp_path / "wp.json"
    r = run_cli("tokenizer", "train", corpus, "--kind", "wordpiece", "--vocab-size", "400", "--out", tok)
    assert r.returncode == 0, r.stderr
    assert json.loads(tok.read_text(encoding="utf-8"))["kind"] == "wordpiece"
    for action, out, check in (("export-hf", "hf.json", '"WordPiece"'), ("export-vocab", "vocab.txt", "[UNK]\n")):
        r = run_cli("tokenizer", action, tok, tmp_path / out)
        assert r.returncode == 0 and check in (tmp_path / out).read_text(encoding="utf-8"), r.stderr
    # prepare with the trained kind, then with the exported vocab.txt as a given tokenizer file
    ds = prepare_dataset(str(corpus), str(tmp_path / "ds1"), tokenizer="wordpiece", vocab_size=400, progress=False)
    given = prepare_dataset(str(corpus), str(tmp_path / "ds2"), tokenizer=str(tmp_path / "vocab.txt"), progress=False)
    assert given.tokenizer.vocab_size == ds.tokenizer.vocab_size == 400
    a = read_token_file(ds.train_path)
    assert a.tolist() == read_token_file(given.train_path).tolist()
    assert a.tolist()[:50] == load_tokenizer(tok).encode(SHAKESPEARE[:30000])[:50]
    r = run_cli("tokenizer", "export-vocab", tmp_path / "ds1" / "tokenizer.json", tmp_path / "v.txt")
    assert r.returncode == 0
    with pytest.raises(TokenizerError, match="tokenizer file"):
        prepare_dataset(str(corpus), str(tmp_path / "ds3"), tokenizer=str(tmp_path / "nothing.json"), progress=False)


def test_train_config_accepts_wordpiece_and_tokenizer_files(tmp_path):
    from cllm.errors import ConfigError
    from cllm.training import TrainConfig

    TrainConfig(tokenizer="wordpiece").validate()
    (tmp_path / "vocab.txt").write_text("[UNK]\na\n##b\n", encoding="utf-8")
    TrainConfig(tokenizer=str(tmp_path / "vocab.txt")).validate()
    with pytest.raises(ConfigError, match="tokenizer file"):
        TrainConfig(tokenizer="sentencepiece").validate()
