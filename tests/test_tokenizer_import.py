"""Reading tokenizers made by other libraries (cllm/tokenizers/imports.py): the files are built at
test time by `tokenizers` and `tiktoken` themselves (no network) and CLLM's ids must equal theirs,
on the bundled text and on any Unicode text (hypothesis)."""
import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.tokenizers import BPETokenizer, load_tokenizer
from cllm.tokenizers.base import TokenizerFileError
from cllm.tokenizers.bpe import bytes_to_unicode
from cllm.tokenizers.imports import O200K, import_tokenizer
from cllm.tokenizers.pre_split import PATTERNS

tk = pytest.importorskip("tokenizers", reason="the HuggingFace `tokenizers` library (test extra) builds the files")

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
ODD = "\nNaïve café — 日本語のテキスト 😀👍🏽 e\u0301 ﬁ 12345 don't WE'LL\r\n\ttabs\n  x<|endoftext|>y  \n\n  z"
SAMPLE = SHAKESPEARE[:100000] + ODD
TEXTS = (SAMPLE, SHAKESPEARE[-5000:], ODD, "", " ")
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def hf_bytelevel(tmp_path_factory):
    """A GPT-2-style tokenizer.json (ByteLevel pre-tokenizer with its regex) trained by `tokenizers`."""
    hf = tk.Tokenizer(tk.models.BPE())
    hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([SAMPLE], trainer)
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    hf.save(str(path))
    return path


def _same_ids(hf, tok, texts=TEXTS):
    for text in texts:
        assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids


def test_hf_bytelevel_bpe_same_ids(hf_bytelevel, tmp_path):
    hf = tk.Tokenizer.from_file(str(hf_bytelevel))
    tok = import_tokenizer(str(hf_bytelevel))
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == hf.get_vocab_size() == 700
    assert tok.eos_id == tok.bos_id == hf.token_to_id("<|endoftext|>")
    _same_ids(hf, tok)
    assert tok.encode("<|endoftext|>") != [tok.eos_id]  # not a special unless allowed
    tok.save(tmp_path / "tok.json")  # CLLM's own file keeps the file's ids
    again = load_tokenizer(tmp_path / "tok.json")
    assert again.encode(SAMPLE) == tok.encode(SAMPLE)

    @FAST
    @given(st.text(max_size=300))
    def parity(text):
        ids = tok.encode(text, allowed_special="all")
        assert ids == hf.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text

    parity()


def _edit(path, out, **changes):
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    for key, value in changes.items():
        target, name = (d["model"], key[6:]) if key.startswith("model_") else (d, key)
        target[name] = value
    Path(out).write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    return out


def test_hf_split_pre_tokenizer_ignore_merges_prefix_space_nfc(hf_bytelevel, tmp_path):
    # Llama 3's layout: Split(GPT-4 regex) then ByteLevel without a regex, "ignore_merges": true;
    # then a ByteLevel(add_prefix_space) with an NFC normalizer (Qwen's normalizer)
    split = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": PATTERNS["gpt4"]}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    cases = [dict(pre_tokenizer=split, model_ignore_merges=True),
             dict(pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                 "use_regex": True},
                  normalizer={"type": "NFC"})]
    for k, changes in enumerate(cases):
        path = _edit(hf_bytelevel, tmp_path / f"t{k}.json", **changes)
        hf, tok = tk.Tokenizer.from_file(str(path)), import_tokenizer(str(path))
        _same_ids(hf, tok, TEXTS + ("e\u0301 A\u030a",))
        tok.export_hf(tmp_path / "again.json")  # written back with the file's ids and options
        _same_ids(tk.Tokenizer.from_file(str(tmp_path / "again.json")), tok, TEXTS + ("e\u0301 A\u030a",))

        @FAST
        @given(st.text(max_size=200))
        def parity(text):
            assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids

        parity()


def test_ignore_merges_takes_a_whole_chunk_that_is_a_token(tmp_path):
    # merges a+b, b+c, a+bc: "abc" merges to [ab, c] ((a,b) ranks first and (ab,c) is no merge),
    # but with ignore_merges the chunk "abc" is itself a token and is taken whole
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(range(256))}
    vocab.update({"ab": 256, "bc": 257, "abc": 258})
    d = {"version": "1.0", "added_tokens": [], "normalizer": None,
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
         "post_processor": None, "decoder": None,
         "model": {"type": "BPE", "vocab": vocab, "merges": ["a b", "b c", "a bc"], "ignore_merges": False}}
    ab, c = vocab["ab"], vocab["c"]
    for ignore, want in ((False, [ab, c, 32, ab, c]), (True, [258, 32, ab, c])):  # " abc" is a chunk of its own
        d["model"]["ignore_merges"] = ignore
        path = tmp_path / f"m{ignore}.json"
        path.write_text(json.dumps(d), encoding="utf-8")
        hf, tok = tk.Tokenizer.from_file(str(path)), import_tokenizer(str(path))
        assert hf.encode("abc abc").ids[:2] == want[:2]
        assert tok.encode("abc abc")[:2] == want[:2]
        _same_ids(hf, tok, ("abc abc", "xabcx abcabc"))


def test_refuses_what_it_cannot_reproduce(hf_bytelevel, tmp_path):
    uni = tk.Tokenizer(tk.models.Unigram())
    uni.train_from_iterator([SHAKESPEARE[:5000]], tk.trainers.UnigramTrainer(vocab_size=100, show_progress=False))
    uni.save(str(tmp_path / "uni.json"))
    with pytest.raises(TokenizerFileError, match="Unigram model cannot be read"):
        import_tokenizer(str(tmp_path / "uni.json"))
    for changes, words in ((dict(normalizer={"type": "NFKC"}), "normalizer"),
                           (dict(model_byte_fallback=True), "byte_fallback"),
                           (dict(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer")):
        path = _edit(hf_bytelevel, tmp_path / "bad.json", **changes)
        with pytest.raises(TokenizerFileError, match=words):
            import_tokenizer(str(path))
    (tmp_path / "junk.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        import_tokenizer(str(tmp_path / "junk.json"))
    with pytest.raises(TokenizerFileError, match="does not exist"):
        import_tokenizer(str(tmp_path / "nothing.json"))


# ---------------------------------------------------------------------------------------------
# tiktoken rank files and GPT-2's vocab.json + merges.txt

@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
def test_tiktoken_rank_file_same_ids(pattern, tmp_path, monkeypatch):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken (test extra) is the reference")
    from tiktoken.load import load_tiktoken_bpe  # noqa: PLC0415 - optional: the test extra (skipped above without it)

    regex = {"gpt2": PATTERNS["gpt2"], "cl100k": PATTERNS["gpt4"], "o200k": O200K}[pattern]
    bpe = BPETokenizer.train(SAMPLE, 600, pattern=regex, special_tokens=[], progress=False)
    path = tmp_path / "tiny.tiktoken"  # ranks = CLLM ids, written as tiktoken writes them
    path.write_bytes(b"".join(base64.b64encode(bs) + b" %d\n" % i for i, bs in enumerate(bpe.vocab_bytes)))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # read the local file, keep no copy
    ranks = load_tiktoken_bpe(str(path))
    enc = tiktoken.Encoding("tiny", pat_str=regex, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": len(ranks)})
    tok = import_tokenizer(str(path), pattern=pattern)
    assert tok.vocab_size == enc.n_vocab and tok.eos_id == len(ranks)
    for text in TEXTS:
        assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    tok.export_hf(tmp_path / "tokenizer.json")  # and as HuggingFace's file, with tiktoken's ids
    _same_ids(tk.Tokenizer.from_file(str(tmp_path / "tokenizer.json")), tok)

    @FAST
    @given(st.text(max_size=300))
    def parity(text):
        assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")

    parity()
    with pytest.raises(TokenizerFileError, match="split pattern"):
        import_tokenizer(str(path))


def test_gpt2_vocab_and_merges_files(hf_bytelevel, tmp_path):
    hf = tk.Tokenizer.from_file(str(hf_bytelevel))
    model = json.loads(Path(hf_bytelevel).read_text(encoding="utf-8"))["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = import_tokenizer(str(tmp_path))  # a directory: vocab.json + merges.txt
    _same_ids(hf, tok)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(TokenizerFileError, match="no merges.txt"):
        import_tokenizer(str(tmp_path / "vocab.json"))


def test_cli_import(hf_bytelevel, tmp_path):
    def run_cli(*args):
        return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, check=False)

    out = tmp_path / "tok.json"
    r = run_cli("tokenizer", "import", hf_bytelevel, "--out", out)
    assert r.returncode == 0 and "bpe-vocab tokenizer, 700 ids" in r.stdout, r.stderr
    r = run_cli("tokenizer", "encode", out, "Hello there, citizen")
    hf = tk.Tokenizer.from_file(str(hf_bytelevel))
    assert r.stdout.split() == [str(i) for i in hf.encode("Hello there, citizen").ids]
    _edit(hf_bytelevel, tmp_path / "nfkc.json", normalizer={"type": "NFKC"})
    r = run_cli("tokenizer", "import", tmp_path / "nfkc.json", "--out", tmp_path / "x.json")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "NFKC" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


def test_a_bos_adding_post_processor_puts_bos_before_prompts(tmp_path):
    """Llama 3's tokenizer.json puts <|begin_of_text|> before every sequence (a TemplateProcessing inside a
    Sequence post-processor): generate's prompt ids equal `tokenizers`' encode with its special tokens, the
    flag survives CLLM's file and the tokenizer.json export, and a tokenizer without it adds nothing."""
    from cllm.completion import encode_prompt  # noqa: PLC0415 - only this test needs the generation side

    hf = tk.Tokenizer(tk.models.BPE())
    hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=600, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                     show_progress=False, initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([SAMPLE], trainer)
    plain = tmp_path / "plain.json"
    hf.save(str(plain))
    hf.post_processor = tk.processors.Sequence([
        tk.processors.ByteLevel(trim_offsets=False),
        tk.processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                         pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                         special_tokens=[("<|begin_of_text|>", 0)])])
    path = tmp_path / "llama3.json"
    hf.save(str(path))
    tok = import_tokenizer(str(path))
    assert tok.add_bos and tok.bos_id == 0
    texts = ["ROMEO: hello", ODD, SHAKESPEARE[:2000]]
    for text in texts:
        assert encode_prompt(tok, text, 10**6, warn=print) == hf.encode(text).ids
    tok.save(tmp_path / "cllm.json")
    again = load_tokenizer(str(tmp_path / "cllm.json"))
    assert again.add_bos and encode_prompt(again, "x y", 100, print) == hf.encode("x y").ids
    tok.export_hf(tmp_path / "exported.json")
    exported = tk.Tokenizer.from_file(str(tmp_path / "exported.json"))
    assert all(exported.encode(text).ids == hf.encode(text).ids for text in texts)
    cropped = encode_prompt(tok, SHAKESPEARE[:2000], 50, warn=lambda msg: None)
    assert len(cropped) == 49 and cropped[0] == 0 and cropped[1:] == hf.encode(SHAKESPEARE[:2000]).ids[-48:]
    without = import_tokenizer(str(plain))
    assert not without.add_bos and encode_prompt(without, "x y", 100, print) == hf.encode("x y").ids[1:]
