"""Conversation data: JSONL rows {"messages": [{"role": ..., "content": ...}, ...]} -> a chat dataset.

A chat dataset is a text dataset's files (DIR/tokenizer.json, train.bin, val.bin, meta.json with "kind": "chat")
plus, per split, the per-token assistant mask and where each conversation starts:
    DIR/train_mask.npy    (tokens,) uint8: 1 on the tokens the assistant says (assistant_mask's), 0 elsewhere
    DIR/train_starts.npy  (conversations + 1,) int64: conversation c is tokens[starts[c]:starts[c+1]]
(and the same for val). The ids are the conversations rendered by the tokenizer's chat template, one after
the other; training windows never cross a start (cllm/training/data.py ChatSampler). The held-out split is
of whole conversations (a seeded choice of --val-fraction of them).

Bad rows (not JSON, not {"messages": [...]}, an unknown role, empty or non-string content, no assistant turn,
a row the template refuses) are counted by reason and the first few reported as file:line; no valid row at
all is a DataError.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from cllm.chat.template import CHATML_TOKENS, ChatTemplateError, add_chat_tokens, assistant_mask
from cllm.data.prepare import PreparedDataset, _claim_output_dir, _load_cached
from cllm.data.tokenfile import TokenFileWriter, read_token_file
from cllm.errors import DataError, TokenizerError
from cllm.fileio import atomic_write_text
from cllm.tokenizers import train_tokenizer
from cllm.tokenizers.imports import import_tokenizer

CHAT_VERSION = 1
ROLES = ("system", "user", "assistant")
SHOWN_BAD_ROWS = 5  # bad rows reported with their file:line; the rest are only counted
VAL_SEED = 0  # the held-out conversations are a fixed choice: the same files give the same split


@dataclass
class BadRows:
    """Rows left out: reason -> count, and the first SHOWN_BAD_ROWS as "file:line: reason"."""

    counts: dict = field(default_factory=dict)
    first: list = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.first) < SHOWN_BAD_ROWS:
            self.first.append(f"{where}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        if not self.total:
            return "no bad rows"
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"{self.total} bad rows left out ({reasons}); first: " + "; ".join(self.first)


# ------------------------------------------------------------------------------ reading
def chat_files(path) -> list[str]:
    """The *.jsonl files of `path` (itself, or a folder's, recursively, sorted)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(root, f) for f in sorted(files) if f.endswith(".jsonl")]
    return out


def _first_row(path: str, lines: int = 100):
    """The first row of the first `lines` lines that is JSON (so a few bad rows first do not hide a chat file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for _, line in zip(range(lines), f):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
    except OSError:
        return None
    return None


def is_chat_source(path) -> bool:
    """A *.jsonl file whose first JSON row is an object with "messages", or a folder whose files are all *.jsonl
    (hidden ones aside) and whose first such file is one."""
    path = os.fspath(path)
    if os.path.isfile(path):
        row = _first_row(path) if path.endswith(".jsonl") else None
        return isinstance(row, dict) and "messages" in row
    if not os.path.isdir(path):
        return False
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [os.path.join(root, n) for n in names if not n.startswith(".")]
    if not files or not all(f.endswith(".jsonl") for f in files):
        return False
    return is_chat_source(sorted(files)[0])


def _row_problem(row) -> str | None:
    """Why `row` (parsed JSON) is not a conversation to train on, or None."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        return 'not an object with a "messages" list'
    messages = row["messages"]
    for m in messages:
        if not isinstance(m, dict):
            return "a message that is not an object"
        if m.get("role") not in ROLES:
            return "an unknown role"
        if not isinstance(m.get("content"), str):
            return "content not a string"
        if not m["content"].strip():
            return "empty content"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn"
    return None


def read_conversations(path) -> tuple[list[tuple[str, list]], BadRows]:
    """([(file:line, messages)] of the valid rows, the bad rows) of the JSONL at `path`; blank lines are
    not rows. A DataError when no file is there."""
    files = chat_files(path)
    if not files:
        raise DataError(f"no *.jsonl files at {path}")
    good, bad = [], BadRows()
    for file in files:
        try:
            with open(file, "rb") as f:
                for n, raw in enumerate(f, 1):
                    where = f"{file}:{n}"
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        bad.add(where, "not UTF-8")
                        continue
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        bad.add(where, "not JSON")
                        continue
                    problem = _row_problem(row)
                    if problem:
                        bad.add(where, problem)
                    else:
                        good.append((where, [{"role": m["role"], "content": m["content"]} for m in row["messages"]]))
        except OSError as exc:
            raise DataError(f"cannot read {file}: {exc.strerror}") from None
    return good, bad


# ------------------------------------------------------------------------------ the tokenizer
def chat_tokenizer(tokenizer, conversations, vocab_size, bpe_pattern: str):
    """The tokenizer the conversations are rendered with: "bpe" or "char" trains one on their text and adds
    ChatML's tokens and template; a tokenizer file or a Tokenizer (--init-from's) must have a chat template."""
    if isinstance(tokenizer, str) and tokenizer in ("bpe", "char"):
        texts = (m["content"] for _, conv in conversations for m in conv)
        kw = {"pattern": bpe_pattern} if tokenizer == "bpe" else {}
        return add_chat_tokens(train_tokenizer(tokenizer, texts, vocab_size, progress=False, **kw))
    if isinstance(tokenizer, str):
        if not os.path.exists(tokenizer):
            raise TokenizerError(f"conversations need a tokenizer with a chat template: --tokenizer bpe or char "
                                 f"(trained here, with ChatML's tokens) or a tokenizer file that has one, not "
                                 f"{tokenizer!r}")
        tokenizer = import_tokenizer(tokenizer)
    if getattr(tokenizer, "chat_template", None) is None:
        if tokenizer.kind in ("bpe", "char") and not all(t in (tokenizer.special_tokens or {})
                                                         for t in CHATML_TOKENS):
            raise TokenizerError(f"this {tokenizer.kind} tokenizer has no chat tokens (<|im_start|>, <|im_end|>) and "
                                 "no chat template; a trained model's embedding cannot grow new tokens here, so "
                                 "fine-tune a model whose tokenizer has them (pretrain it with --chat-tokens) or an "
                                 "imported HuggingFace model with a chat template")
        raise TokenizerError(f"this {tokenizer.kind} tokenizer has no chat template to render conversations with")
    return tokenizer


# ------------------------------------------------------------------------------ prepare
def encode_conversations(tokenizer, conversations, bad: BadRows) -> tuple[list, ChatTemplateError | None]:
    """([(ids, assistant mask)] of each conversation the chat template renders, the first refusal): a conversation
    the template refuses is counted in `bad` (prepare's and evaluate's report) and left out."""
    encoded, first_error = [], None
    for where, conv in conversations:
        try:
            encoded.append(assistant_mask(tokenizer, conv))
        except ChatTemplateError as exc:
            first_error = first_error or exc
            bad.add(where, "the chat template refused it")
    return encoded, first_error


@dataclass
class ChatDataset(PreparedDataset):
    """A prepared chat dataset: its kind (cllm/kinds.py for_data) names the chat kind, whose summary it needs."""

    kind: str = "chat"


def _split(n: int, val_fraction: float) -> np.ndarray:
    """(n,) bool: True for the conversations held out (a seeded choice of round(n * f), at least one when f > 0)."""
    n_val = 0 if val_fraction == 0 else max(1, round(n * val_fraction))
    if val_fraction > 0 and n_val >= n:
        raise DataError(f"{n} conversation(s) are too few for a validation split of whole conversations; give more "
                        "or use --val-fraction 0")
    held = np.zeros(n, bool)
    held[np.random.default_rng(VAL_SEED).permutation(n)[:n_val]] = True
    return held


def _cache_key(files: list[str], options: dict) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"chat_version": CHAT_VERSION, "options": options}, sort_keys=True).encode())
    for path in files:
        h.update(b"\0file\0" + os.path.abspath(path).encode("utf-8", "surrogatepass") + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def prepare_chat_dataset(data_path, out_dir, opts) -> ChatDataset:
    """The chat dataset (module doc) of the JSONL at `data_path` in `out_dir`, with PrepareOptions `opts`
    (tokenizer, vocab_size, val_fraction, bpe_pattern, force apply)."""
    val_fraction = opts.val_fraction
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise DataError(f"val fraction must be a number in [0, 1), got {val_fraction!r}; e.g. --val-fraction 0.1")
    out_dir = os.fspath(out_dir)
    # the cache is valid for this tokenizer only: a file's or a given Tokenizer's content, not its name
    if not isinstance(opts.tokenizer, str):
        tok_option = hashlib.sha256(json.dumps(opts.tokenizer._to_dict(), sort_keys=True).encode()).hexdigest()
    elif os.path.isfile(opts.tokenizer):
        with open(opts.tokenizer, "rb") as f:
            tok_option = hashlib.sha256(f.read()).hexdigest()
    else:
        tok_option = opts.tokenizer
    options = {"tokenizer": tok_option, "vocab_size": opts.vocab_size, "val_fraction": float(val_fraction),
               "bpe_pattern": opts.bpe_pattern}
    files = chat_files(data_path)
    key = _cache_key(files, options) if files else ""
    if not opts.force and files:
        cached = _load_cached(out_dir, key)
        if cached is not None and all(os.path.exists(p) for p in _side_files(out_dir)):
            return ChatDataset(**vars(cached))
    t0 = time.perf_counter()
    conversations, bad = read_conversations(data_path)
    if not conversations:
        raise DataError(f"no valid conversation in {data_path}: {bad.describe()}. Each row must be "
                        '{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]} with an '
                        "assistant turn")
    tok = chat_tokenizer(opts.tokenizer, conversations, opts.vocab_size, opts.bpe_pattern)
    encoded, first_error = encode_conversations(tok, conversations, bad)
    if not encoded:  # e.g. a tokenizer that cannot do chat at all: its own words, once
        raise DataError(f"no conversation of {data_path} could be rendered: {first_error}")
    held = _split(len(encoded), val_fraction)
    meta_path = _claim_output_dir(out_dir)
    counts = {}
    for split, keep in (("train", ~held), ("val", held)):
        chosen = [e for e, k in zip(encoded, keep) if k]
        ids = np.array([i for conv_ids, _ in chosen for i in conv_ids], np.int64)
        mask = np.array([m for _, conv_mask in chosen for m in conv_mask], np.uint8)
        starts = np.concatenate([[0], np.cumsum([len(conv_ids) for conv_ids, _ in chosen])]).astype(np.int64)
        with TokenFileWriter(os.path.join(out_dir, f"{split}.bin"), tok.vocab_size) as w:
            w.write(ids)
        np.save(os.path.join(out_dir, f"{split}_mask.npy"), mask, allow_pickle=False)
        np.save(os.path.join(out_dir, f"{split}_starts.npy"), starts, allow_pickle=False)
        counts[split] = {"conversations": len(chosen), "tokens": int(ids.size), "assistant_tokens": int(mask.sum())}
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    meta = {
        "format": "cllm-dataset", "kind": "chat", "version": CHAT_VERSION, "cache_key": key,
        "source": os.path.abspath(os.fspath(data_path)), "tokenizer": tok.kind, "vocab_size": tok.vocab_size,
        "train_tokens": counts["train"]["tokens"], "val_tokens": counts["val"]["tokens"],
        "split": "conversations", "train": counts["train"], "val": counts["val"], "files": len(files),
        "bad_rows": {"total": bad.total, "counts": bad.counts, "first": bad.first},
        "options": options, "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return ChatDataset(out_dir, tok, os.path.join(out_dir, "train.bin"), os.path.join(out_dir, "val.bin"), meta)


def _side_files(out_dir: str) -> list[str]:
    return [os.path.join(out_dir, f"{s}_{part}.npy") for s in ("train", "val") for part in ("mask", "starts")]


def summary(ds: ChatDataset) -> str:
    """What `cli.py prepare` prints about a chat dataset."""
    m = ds.meta
    bad = m["bad_rows"]
    shown = (f"{bad['total']} bad rows left out ("
             + ", ".join(f"{n} {r}" for r, n in sorted(bad["counts"].items())) + "); first: "
             + "; ".join(bad["first"])) if bad["total"] else "no bad rows"
    state = "reused cached dataset" if ds.cached else f"prepared in {m['seconds']:.1f} s"
    t, v = m["train"], m["val"]
    return (f"conversations: {t['conversations'] + v['conversations']:,} from {m['files']} file(s); {shown}\n"
            f"{state}: {ds.out_dir} (chat, {m['tokenizer']} tokenizer, {m['vocab_size']:,} ids): train "
            f"{t['conversations']:,} conversations, {t['tokens']:,} tokens ({t['assistant_tokens']:,} assistant); "
            f"val {v['conversations']:,} conversations, {v['tokens']:,} tokens ({v['assistant_tokens']:,} assistant)")


# ------------------------------------------------------------------------------ reading a split back
@dataclass
class ChatSplit:
    """One split of a chat dataset: ids (tokens,) uint16/32 memmap, mask (tokens,) uint8, starts
    (conversations + 1,) int64. len() is its token count, as a text split's."""

    tokens: np.ndarray
    mask: np.ndarray
    starts: np.ndarray
    kind: str = "chat"  # the dataset kind (cllm/kinds.py for_data) that trains and validates it

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def conversations(self) -> int:
        return len(self.starts) - 1


def read_chat_split(out_dir: str, split: str) -> ChatSplit:
    """DIR/{split}.bin with its mask and starts, checked against each other."""
    tokens = read_token_file(os.path.join(out_dir, f"{split}.bin"))
    try:
        mask = np.load(os.path.join(out_dir, f"{split}_mask.npy"), mmap_mode="r", allow_pickle=False)
        starts = np.load(os.path.join(out_dir, f"{split}_starts.npy"), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"the chat dataset {out_dir} lacks or has a damaged {split}_mask.npy / {split}_starts.npy "
                        f"({exc}); run `cli.py prepare` again") from None
    if (mask.shape != tokens.shape or starts.ndim != 1 or len(starts) < 1 or starts[0] != 0
            or starts[-1] != len(tokens) or np.any(np.diff(starts) <= 0)):
        raise DataError(f"the chat dataset {out_dir}: {split}.bin, {split}_mask.npy and {split}_starts.npy do not "
                        "agree; run `cli.py prepare` again")
    return ChatSplit(tokens, mask, starts)


def conversation_window(split: ChatSplit, c: int, T: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y), each (T,) int32, of conversation c from its start: its first T+1 tokens (cut there, or padded);
    y[t] = the next token where the mask says the assistant says it, else -1 (no loss), and -1 on padding.
    The padding inputs are pad_id: any valid id, as causal attention keeps them out of the real positions."""
    a, b = int(split.starts[c]), int(split.starts[c + 1])
    n = min(b - a, T + 1)
    ids = np.asarray(split.tokens[a:a + n], np.int32)
    keep = np.asarray(split.mask[a + 1:a + n], bool)
    x = np.full(T, pad_id, np.int32)
    y = np.full(T, -1, np.int32)
    x[:n - 1] = ids[:-1]
    y[:n - 1] = np.where(keep, ids[1:], -1)
    return x, y
