"""Conversation data (cllm/chat/data.py, cllm/chat/kind.py): bad rows, the prepared masks and split, the training
windows and their sampler (cllm/training/data.py ChatSampler), validation over assistant tokens, CLI errors."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cllm import kinds
from cllm.chat.data import ChatSplit, chat_tokenizer, conversation_window, read_chat_split, read_conversations
from cllm.chat.template import assistant_mask
from cllm.data import prepare_dataset
from cllm.data.files import find_files
from cllm.errors import DataError, TokenizerError
from cllm.tokenizers import train_tokenizer
from cllm.training.data import ChatSampler, _splits

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on a mat and then ran to the big red house where it found some milk".split()


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def conversations(n=30, seed=1):
    rng = random.Random(seed)

    def say(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    out = []
    for i in range(n):
        conv = [{"role": "system", "content": "be brief"}] if i % 3 == 0 else []
        conv += [{"role": "user", "content": say(3 + i % 5)}, {"role": "assistant", "content": say(4 + i % 7)}]
        if i % 4 == 0:
            conv += [{"role": "user", "content": say(4)}, {"role": "assistant", "content": say(6)}]
        out.append(conv)
    return out


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    convs = conversations()
    write_jsonl(d / "a.jsonl", [{"messages": c} for c in convs])
    ds = prepare_dataset(d / "a.jsonl", d / "ds", tokenizer="bpe", vocab_size=300, val_fraction=0.2, progress=False)
    return convs, ds


def test_bad_rows_are_counted_with_file_and_line(tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = write_jsonl(tmp_path / "c.jsonl", [
        good,
        "not json",
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        "",  # a blank line is not a row
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]},
        {"text": "no messages"},
        "not json either",
        good,
    ])
    rows, bad = read_conversations(path)
    assert [where for where, _ in rows] == [f"{path}:1", f"{path}:10"]
    assert bad.counts == {"not JSON": 2, "an unknown role": 1, "no assistant turn": 1, "empty content": 1,
                          "content not a string": 1, 'not an object with a "messages" list': 1}
    assert bad.total == 7
    assert bad.first == [f"{path}:2: not JSON", f"{path}:3: an unknown role", f"{path}:5: no assistant turn",
                         f"{path}:6: empty content", f"{path}:7: content not a string"]  # the first five only


def test_jsonl_with_messages_is_the_chat_kind(tmp_path):
    (tmp_path / "chat").mkdir()
    write_jsonl(tmp_path / "chat" / "a.jsonl", [{"messages": conversations(1)[0]}])
    write_jsonl(tmp_path / "other.jsonl", [{"text": "a document"}])
    assert kinds.for_input(tmp_path / "chat" / "a.jsonl", "bpe").name == "chat"
    assert kinds.for_input(tmp_path / "chat", "bpe").name == "chat"
    assert kinds.for_input(tmp_path / "other.jsonl", "bpe").name == "text"
    (tmp_path / "notes.txt").write_text("a note")
    assert kinds.for_input(tmp_path, "bpe").name == "text"  # a folder with other files is a text corpus


def test_the_text_corpus_skips_chat_folders():
    _, files, skipped = find_files(str(ROOT / "data"))
    assert files and not any("conversations.jsonl" in f for f, _ in files)
    assert skipped["chat folders"] == 1
    assert kinds.for_input(ROOT / "data").name == "text" and kinds.for_input(ROOT / "data" / "chat").name == "chat"


def test_prepared_masks_equal_assistant_mask_and_split_is_by_conversation(prepared):
    convs, ds = prepared
    tok = ds.tokenizer
    train, val = read_chat_split(ds.out_dir, "train"), read_chat_split(ds.out_dir, "val")
    assert (train.conversations, val.conversations) == (24, 6)
    expected = {tuple(assistant_mask(tok, c)[0]): assistant_mask(tok, c)[1] for c in convs}
    seen = []
    for split in (train, val):
        for c in range(split.conversations):
            a, b = split.starts[c], split.starts[c + 1]
            ids = tuple(int(i) for i in split.tokens[a:b])
            assert list(split.mask[a:b]) == expected[ids]  # each conversation whole, with its own mask
            seen.append(ids)
    assert sorted(seen) == sorted(expected)  # every conversation in exactly one split
    assert ds.meta["kind"] == "chat" and ds.meta["val"]["conversations"] == 6
    again = prepare_dataset(Path(ds.out_dir).parent / "a.jsonl", ds.out_dir, tokenizer="bpe", vocab_size=300,
                            val_fraction=0.2, progress=False)
    assert again.cached and kinds.for_data(again, again.tokenizer).name == "chat"


def _check_window(split, x, y, T):
    """x, y (T,) are one conversation's first T+1 tokens from its start; returns that conversation."""
    for c in range(split.conversations):
        a, b = int(split.starts[c]), int(split.starts[c + 1])
        n = min(b - a, T + 1)
        ids, mask = np.asarray(split.tokens[a:a + n], np.int64), np.asarray(split.mask[a:a + n])
        if np.array_equal(x[:n - 1], ids[:-1]):
            assert np.array_equal(y[:n - 1], np.where(mask[1:] == 1, ids[1:], -1))
            assert np.all(y[n - 1:] == -1)  # padding has no loss
            return c
    raise AssertionError("a window that is no conversation's beginning")


@pytest.mark.parametrize("T", [24, 200])  # cut conversations; padded ones
def test_windows_are_one_conversation_from_its_start(prepared, T):
    _, ds = prepared
    split = read_chat_split(ds.out_dir, "train")
    sampler = ChatSampler(split, B=4, T=T, seed=3)
    drawn = set()
    for _ in range(10):
        for x, y in sampler.next_global(2):
            assert x.shape == y.shape == (4, T) and x.dtype == y.dtype == np.int32
            for r in range(4):
                drawn.add(_check_window(split, x[r], y[r], T))
    assert len(drawn) > 5
    longest = int(np.diff(split.starts).max())
    if T >= longest:
        x, y = conversation_window(split, 0, T)
        n = int(split.starts[1])
        assert np.all(y[n - 1:] == -1) and np.sum(y >= 0) == np.sum(split.mask[1:n])


def test_sampler_is_deterministic_and_resumes_exactly(prepared):
    _, ds = prepared
    split = read_chat_split(ds.out_dir, "train")
    a, b = ChatSampler(split, 4, 48, seed=7), ChatSampler(split, 4, 48, seed=7)
    a.next_global(3)
    state = json.loads(json.dumps(a.state()))  # as a checkpoint stores it
    b.set_state(state)
    for _ in range(5):
        for (xa, ya), (xb, yb) in zip(a.next_global(2), b.next_global(2)):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    other = ChatSampler(split, 4, 48, seed=8)
    assert not np.array_equal(other.next()[0], ChatSampler(split, 4, 48, seed=7).next()[0])


def test_sampler_skips_conversations_without_assistant_tokens_in_the_window():
    tokens = np.arange(12, dtype=np.uint16)
    mask = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1], np.uint8)
    split = ChatSplit(tokens, mask, np.array([0, 7, 12]))  # conversation 0's assistant starts at token 5
    sampler = ChatSampler(split, 2, 3, seed=0)
    assert list(sampler.eligible) == [1]
    with pytest.raises(DataError, match="larger --seq-len"):
        ChatSampler(ChatSplit(tokens[:7], mask[:7], np.array([0, 7])), 2, 3, seed=0)


class FakeModel:
    """model.loss / token_losses as cllm/model.py's: the loss of position t in row r is 100 r + t."""

    def loss(self, x, y):
        self.shape = x.shape

    def token_losses(self):
        B, T = self.shape
        return np.arange(T)[None, :] + 100.0 * np.arange(B)[:, None]


def test_validation_is_the_mean_over_assistant_targets():
    tokens = np.arange(10, dtype=np.uint16)
    mask = np.array([0, 1, 1, 0, 0, 0, 0, 1, 0, 0], np.uint8)
    split = ChatSplit(tokens, mask, np.array([0, 3, 10]))
    # T=4: conversation 0's targets at positions 0, 1 (row 0); conversation 1's at position 3 (row 1)
    validate = kinds.get("chat").validate
    assert validate(FakeModel(), None, split, B=2, T=4)["val_loss"] == pytest.approx((0 + 1 + 103) / 3)
    # B=1: one conversation per forward, each row 0
    assert validate(FakeModel(), None, split, B=1, T=4)["val_loss"] == pytest.approx((0 + 1 + 3) / 3)
    assert kinds.for_data(split, None).name == "chat"


def test_a_prepared_chat_dataset_loads_as_chat_splits(prepared):
    _, ds = prepared
    train, val = _splits(ds.out_dir)
    assert isinstance(train, ChatSplit) and len(train) == ds.meta["train_tokens"] and val.conversations == 6


def test_tokenizer_must_carry_chat_tokens(prepared):
    convs, _ = prepared
    plain = train_tokenizer("bpe", [m["content"] for c in convs for m in c], 280)
    with pytest.raises(TokenizerError, match="no chat tokens"):
        chat_tokenizer(plain, [], None, "gpt4")
    with pytest.raises(TokenizerError, match="--tokenizer bpe"):
        chat_tokenizer("word", [], None, "gpt4")


def test_a_tokenizer_file_with_a_template_encodes_as_it_is(prepared, tmp_path):
    convs, ds = prepared
    again = prepare_dataset(Path(ds.out_dir).parent / "a.jsonl", tmp_path / "again",
                            tokenizer=str(Path(ds.out_dir) / "tokenizer.json"), val_fraction=0.2, progress=False)
    assert again.tokenizer._to_dict() == ds.tokenizer._to_dict()
    assert np.array_equal(read_chat_split(again.out_dir, "val").tokens, read_chat_split(ds.out_dir, "val").tokens)
    plain = train_tokenizer("bpe", [m["content"] for c in convs for m in c], 280)
    plain.save(tmp_path / "plain.json")
    with pytest.raises(TokenizerError, match="no chat tokens"):
        prepare_dataset(Path(ds.out_dir).parent / "a.jsonl", tmp_path / "o", tokenizer=str(tmp_path / "plain.json"),
                        progress=False)


def test_cli_errors(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["nope", {"messages": [{"role": "user", "content": "hi"}]}])
    r = run_cli("prepare", bad, "--out", tmp_path / "o1", "--tokenizer", "bpe")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no valid conversation" in r.stderr and f"{bad}:1: not JSON" in r.stderr
    good = write_jsonl(tmp_path / "good.jsonl", [{"messages": c} for c in conversations(4)])
    r = run_cli("prepare", good, "--out", tmp_path / "o2", "--tokenizer", "word")  # no chat template
    assert r.returncode != 0 and "Traceback" not in r.stderr and "--tokenizer bpe or char" in r.stderr
    one = write_jsonl(tmp_path / "one.jsonl", [{"messages": c} for c in conversations(1)])
    r = run_cli("prepare", one, "--out", tmp_path / "o3", "--tokenizer", "bpe", "--vocab-size", "270")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "--val-fraction 0" in r.stderr
    r = run_cli("prepare", good, "--out", tmp_path / "o4", "--tokenizer", "bpe", "--vocab-size", "270",
                "--val-fraction", "0")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", tmp_path / "o4", "--checkpoint-dir", tmp_path / "ck", "--no-progress")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "validation split is empty" in r.stderr
