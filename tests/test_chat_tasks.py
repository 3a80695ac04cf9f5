"""bench/chat_tasks.py (the task conversations and their exact-match score), a char tokenizer's special tokens,
and `--chat-tokens`: a base model pretrained on text with the chat tokens that `train --init-from` fine-tunes on
conversations."""
import json
import re
import sys
import warnings

import pytest
from train_helpers import ROOT, all_threads_after, read_metrics, tiny_config, write_corpus  # noqa: F401

from cllm.chat.template import CHAT_CHARS, CHATML_TOKENS, add_chat_tokens, apply_chat_template, assistant_mask
from cllm.data import prepare_dataset
from cllm.errors import TokenizerError
from cllm.tokenizers import CharTokenizer, load_tokenizer, train_tokenizer
from cllm.training import train

# bench/ itself stays off sys.path: its kernels.py would shadow the `kernels` package transformers imports
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import chat_tasks  # noqa: E402

CONV = [{"role": "user", "content": "Reverse the word 'night'."}, {"role": "assistant", "content": "thgin"}]


@pytest.fixture(scope="module")
def rows():
    return chat_tasks.make_rows(seed=3, n_train=400, n_held_out=60)


def _inputs(row, turn: int = 0) -> tuple[str, tuple]:
    """(task, the input read back from the user's words by a pattern of this test's own) of one turn."""
    text = row["messages"][2 * turn]["content"]
    quoted = re.findall(r"'([a-z]+)'", text)
    numbers = tuple(int(n) for n in re.findall(r"\d+", text))
    task = row["task"].split(",")[turn]
    if task in ("add", "compare"):
        assert len(numbers) == 2, text
        return task, numbers
    if task == "count":
        assert len(quoted) == 2 and len(quoted[0]) == 1, text
        return task, tuple(quoted)
    assert len(quoted) == 1, text
    return task, (quoted[0],)


@pytest.fixture(scope="module")
def multi_turn_rows():
    return chat_tasks.make_rows(seed=3, n_train=400, n_held_out=60, turns=3)


def _turns(rows):
    """(row, turn) of every question/answer turn of the rows."""
    return [(r, t) for r in rows for t in range(len(r["messages"]) // 2)]


@pytest.mark.parametrize("split", ["rows", "multi_turn_rows"])
def test_every_answer_is_right(split, request):
    """Each reference answer of every turn, recomputed here another way than the generator computes it."""
    rows = request.getfixturevalue(split)
    seen = set()
    for row, turn in _turns(rows["train"] + rows["held_out"]):
        task, inp = _inputs(row, turn)
        seen.add(task)
        got = row["messages"][2 * turn + 1]["content"]
        if task == "add":
            assert int(got) == sum(inp) and 10 <= min(inp) and max(inp) <= 99
        elif task == "compare":
            assert int(got) == sorted(inp)[-1] and inp[0] != inp[1]
        elif task == "reverse":
            assert got == "".join(reversed(inp[0]))
        elif task == "spell":
            assert got.split("-") == list(inp[0])
        elif task == "count":
            letter, word = inp
            assert int(got) == sum(1 for ch in word if ch == letter)
    assert seen == set(chat_tasks.TASKS) and len(seen) >= 5


def test_rows_per_task_and_phrasings(rows):
    for name, n in (("train", 400), ("held_out", 60)):
        counts = {}
        for r in rows[name]:
            counts[r["task"]] = counts.get(r["task"], 0) + 1
        assert counts == {t: n for t in chat_tasks.TASKS}
    # the phrasing varies: every task's user turns come in more than one wording
    for task in chat_tasks.TASKS:
        shapes = {re.sub(r"'[a-z]+'|\d+", "X", r["messages"][0]["content"]) for r in rows["train"] if r["task"] == task}
        assert len(shapes) >= 2, (task, shapes)


@pytest.mark.parametrize("split", ["rows", "multi_turn_rows"])
def test_held_out_inputs_are_never_in_train(split, request):
    """No held-out word is in any train row (any turn); no held-out number pair is a train pair, in either order."""
    rows = request.getfixturevalue(split)

    def words_and_pairs(split):
        words, pairs = set(), set()
        for r, turn in _turns(split):
            task, inp = _inputs(r, turn)
            if task in ("add", "compare"):
                pairs.add(frozenset(inp))
            else:
                words.add(inp[-1])
        return words, pairs

    train_words, train_pairs = words_and_pairs(rows["train"])
    held_words, held_pairs = words_and_pairs(rows["held_out"])
    assert held_words and held_pairs
    assert not held_words & train_words
    assert not held_pairs & train_pairs
    held_text = " ".join(r["messages"][0]["content"] for r in rows["held_out"])
    for r, turn in _turns(rows["train"]):  # nor as a substring of any word of a train prompt
        for w in re.findall(r"'([a-z]{3,})'", r["messages"][2 * turn]["content"]):
            assert f"'{w}'" not in held_text


def test_turns_join_the_same_questions(rows, multi_turn_rows):
    """--turns 3: the single-question rows, in order, three to a conversation of alternating user and assistant
    turns, each "task" naming its turns' tasks; the held-out rows stay one question each, as with --turns 1."""
    multi = multi_turn_rows["train"]
    assert len(multi) == -(-len(rows["train"]) // 3) and all(len(r["messages"]) == 6 for r in multi[:-1])
    assert [m for r in multi for m in r["messages"]] == [m for r in rows["train"] for m in r["messages"]]
    assert [t for r in multi for t in r["task"].split(",")] == [r["task"] for r in rows["train"]]
    for r in multi:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * (len(r["messages"]) // 2)
    assert multi_turn_rows["held_out"] == rows["held_out"]
    # questions per task, counted over the turns, are still --train's
    counts = {}
    for r in multi:
        for task in r["task"].split(","):
            counts[task] = counts.get(task, 0) + 1
    assert counts == {t: 400 for t in chat_tasks.TASKS}


def test_conversation_tokens_is_the_rendered_length(multi_turn_rows):
    """make's "longest" (the --seq-len to choose) counts what the chat template gives a char tokenizer."""
    tok = add_chat_tokens(train_tokenizer("char", "abc", progress=False))
    for r in multi_turn_rows["train"][:20] + multi_turn_rows["held_out"][:5]:
        assert chat_tasks.conversation_tokens(r) == len(apply_chat_template(tok, r["messages"]))


def test_the_same_seed_makes_the_same_files(tmp_path):
    a = chat_tasks.make(tmp_path / "a", 5, 20, 10)
    b = chat_tasks.make(tmp_path / "b", 5, 20, 10)
    c = chat_tasks.make(tmp_path / "c", 6, 20, 10)
    read = [open(p["held_out"]).read() for p in (a, b, c)]
    assert read[0] == read[1] != read[2]
    for line in open(a["train"]):
        row = json.loads(line)
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


@pytest.mark.parametrize("got, expected, ok", [
    ("85", "85", True), (" 85\n", "85", True), ("85.", "85", True), ("85 .", "85", True),
    ("n-i-g-h-t", "n-i-g-h-t", True), ("The  answer\tis 3", "The answer is 3", True),
    ("86", "85", False), ("8 5", "85", False), ("85..", "85", False), ("Thgin", "thgin", False), ("", "0", False),
])
def test_exact_match_rule(got, expected, ok):
    assert chat_tasks.exact_match(got, expected) is ok


def test_score_counts_per_task():
    rows = [{"task": "add", "user": "1", "expected": "2"}, {"task": "add", "user": "3", "expected": "4"},
            {"task": "spell", "user": "ab", "expected": "a-b"}]
    answers = {"1": "2.", "3": "5", "ab": "a-b"}
    tasks = chat_tasks.score(rows, answers.get)
    assert tasks == {"add": {"n": 2, "correct": 1, "exact_match": 0.5},
                     "spell": {"n": 1, "correct": 1, "exact_match": 1.0}}


def test_cli_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    with pytest.raises(SystemExit, match="not a row of `make`"):
        chat_tasks.main(["score", str(bad), "--checkpoint", str(tmp_path)])
    with pytest.raises(SystemExit, match="too many"):
        chat_tasks.make_rows(0, 10, 10, words=["abc", "abd", "abe"])


# ------------------------------------------------------------------------------ char tokenizer specials
def test_char_tokenizer_special_tokens_are_single_ids_and_round_trip(tmp_path):
    tok = train_tokenizer("char", "hello world\n", progress=False)
    n = tok.vocab_size
    add_chat_tokens(tok)
    missing = [c for c in CHAT_CHARS if c not in "hello world\n"]
    assert tok.vocab_size == n + len(missing) + 2
    assert [tok.special_tokens[t] for t in CHATML_TOKENS] == [tok.vocab_size - 2, tok.vocab_size - 1]
    assert tok.encode("hello") == tok.encode("hello")[:5] and tok.decode(tok.encode("hel")) == "hel"
    # the corpus's ids keep their meaning: the added characters and specials come after them
    assert tok.encode("hello world") == train_tokenizer("char", "hello world\n", progress=False).encode("hello world")
    # plain encode reads the special strings as characters; allowed_special as one id each
    text = "<|im_start|>user\nhi 42<|im_end|>"
    assert tok.encode(text) == [tok.token_to_id(c) for c in text]
    ids = tok.encode(text, allowed_special="all")
    assert ids[0] == tok.special_tokens["<|im_start|>"] and ids[-1] == tok.special_tokens["<|im_end|>"]
    assert len(ids) == len(text) - len("<|im_start|>") - len("<|im_end|>") + 2 and tok.decode(ids) == text
    tok.save(tmp_path / "tok.json")
    back = load_tokenizer(tmp_path / "tok.json")
    assert back._to_dict() == tok._to_dict() and back.chat_template == tok.chat_template
    assert back.encode(text, allowed_special="all") == ids
    ids, mask = assistant_mask(back, CONV)
    assert back.decode([i for i, m in zip(ids, mask) if m]) == "thgin<|im_end|>"


def test_a_char_file_without_specials_reads_as_before(tmp_path):
    """A char tokenizer file from before specials (no "special_tokens") loads, and such a tokenizer saves
    the same fields as before."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "cllm-tokenizer", "version": 1, "kind": "char", "chars": list("\n abc")}))
    tok = load_tokenizer(path)
    assert tok.vocab_size == 5 and tok.special_tokens == {} and tok._to_dict() == {"chars": list("\n abc")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert tok.encode("cab", allowed_special="all") == [4, 2, 3]


def test_char_special_token_errors(tmp_path):
    tok = CharTokenizer("ab", special_tokens=["<s>"])
    with pytest.raises(TokenizerError, match="cannot take new characters"):
        tok.add_chars("c")
    with pytest.raises(TokenizerError, match="two characters or more"):
        CharTokenizer("ab", special_tokens=["x"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "cllm-tokenizer", "version": 1, "kind": "char", "chars": ["a"],
                                "special_tokens": {"<s>": 5}}))
    with pytest.raises(TokenizerError, match="special token ids"):
        load_tokenizer(path)
    with pytest.raises(TokenizerError, match="word tokenizer"):
        add_chat_tokens(train_tokenizer("word", "a b c", progress=False))


# ------------------------------------------------------------------------------ --chat-tokens and SFT from it
@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_chat_tokens_flag_puts_the_tokens_in_the_tokenizer(tmp_path, kind):
    corpus = write_corpus(tmp_path / "text")
    extra = {"vocab_size": 300} if kind == "bpe" else {}
    plain = prepare_dataset(str(corpus), str(tmp_path / "plain"), tokenizer=kind, progress=False, **extra)
    ds = prepare_dataset(str(corpus), str(tmp_path / "chat"), tokenizer=kind, chat_tokens=True, progress=False,
                         **extra)
    tok = load_tokenizer(tmp_path / "chat" / "tokenizer.json")
    assert all(t in tok.special_tokens for t in CHATML_TOKENS) and tok.chat_template is not None
    assert not any(t in (plain.tokenizer.special_tokens if kind == "bpe" else {}) for t in CHATML_TOKENS)
    assert ds.meta["options"]["chat_tokens"] is True and "chat_tokens" not in plain.meta["options"]
    assert ds.meta["vocab_size"] == tok.vocab_size
    # the corpus's tokens are the same ids with or without the flag
    assert (ds.train_tokens() == plain.train_tokens()).all()
    assert len(apply_chat_template(tok, CONV)) > 0


def test_chat_tokens_refuses_what_cannot_carry_them(tmp_path):
    corpus = write_corpus(tmp_path / "text")
    with pytest.raises(TokenizerError, match="char or bpe"):
        prepare_dataset(str(corpus), str(tmp_path / "w"), tokenizer="word", chat_tokens=True, progress=False)
    plain = train_tokenizer("char", corpus.read_text(), progress=False)
    with pytest.raises(TokenizerError, match="lacks"):
        prepare_dataset(str(corpus), str(tmp_path / "g"), tokenizer=plain, chat_tokens=True, progress=False)


def test_sft_from_a_chat_token_base(tmp_path):
    """A base pretrained on text with --chat-tokens; 2 steps of `train --init-from` on task conversations."""
    corpus = write_corpus(tmp_path / "text")
    base = tmp_path / "base"
    train(tiny_config(corpus, base, tokenizer="char", chat_tokens=True, max_steps=2, seq_len=96))
    tasks = chat_tasks.make(tmp_path / "tasks", 0, 8, 4)
    sft = tmp_path / "sft"
    train(tiny_config(tasks["train"], sft, init_from=str(base / "latest"), max_steps=2, seq_len=96,
                      val_fraction=0.2))
    records = read_metrics(sft)
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2]
    assert any("val_loss" in r for r in records)
    tok = load_tokenizer(sft / "latest" / "tokenizer.json")
    assert tok._to_dict() == load_tokenizer(base / "latest" / "tokenizer.json")._to_dict()
    meta = json.loads((sft / "dataset" / "meta.json").read_text())
    assert meta["kind"] == "chat" and meta["bad_rows"]["total"] == 0


def test_conversations_prepare_with_a_char_tokenizer_of_their_own(tmp_path):
    """`prepare CONVERSATIONS --tokenizer char`: a char tokenizer of their text with the chat tokens."""
    tasks = chat_tasks.make(tmp_path / "tasks", 0, 6, 3)
    ds = prepare_dataset(tasks["train"], str(tmp_path / "chat"), tokenizer="char", val_fraction=0.2, progress=False)
    assert ds.meta["kind"] == "chat" and ds.meta["bad_rows"]["total"] == 0
    assert all(t in ds.tokenizer.special_tokens for t in CHATML_TOKENS)
