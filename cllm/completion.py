"""From a prompt to text, for the `generate` command and the server alike: load a checkpoint for
generation, turn the prompt into ids, and release the generated text piece by piece, ended at the
first stop string.

    model, tok, path = load_for_generation("checkpoints/run")
    ids = encode_prompt(tok, "ROMEO:", model.config.max_seq_len, warn=print)
    out = StopStream(tok, stops=["\\n\\n"])
    for token in Generator(model, eos_id=tok.eos_id).stream(ids, SamplingConfig()):
        show(out.add(token))        # text safe to show now (held back: a possible stop string's
        if out.stopped:             # start, half of a UTF-8 character)
            break
    show(out.finish())
"""
from __future__ import annotations

import warnings

from cllm.errors import CheckpointError, ConfigError


def load_for_generation(checkpoint: str, tokenizer_path=None, threads=None, device: str = "cpu",
                        quantize: str | None = None):
    """(model, tokenizer, checkpoint path) with a clear error for anything missing. The model holds
    its parameters only (no gradients or optimizer moments: cllm/model.py allocates those on first use).
    quantize "int8": an Int8Model (cllm/quantize.py), quantized here at load time."""
    # costly at start-up: these load Numba and the kernels, and cllm/data/textkind.py imports this module
    # on every `prepare` (for default_start_ids), which never loads a model
    from cllm.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: PLC0415
    from cllm.device import select_gpu, to_device  # noqa: PLC0415
    from cllm.quantize import Int8Model, check_scheme  # noqa: PLC0415
    from cllm.runtime import configure_threads  # noqa: PLC0415
    from cllm.tokenizers import load_tokenizer  # noqa: PLC0415

    check_scheme(quantize, device)
    configure_threads(threads)
    select_gpu(device)  # a missing GPU is reported before the checkpoint is read
    ckpt = load_checkpoint(checkpoint)
    path = tokenizer_path or ckpt.tokenizer_path
    if path is None:
        raise CheckpointError(f"checkpoint {ckpt.path!r} has no tokenizer.json; pass --tokenizer PATH")
    tok = load_tokenizer(path)
    if tok.vocab_size != ckpt.model_config.vocab_size:
        raise CheckpointError(f"the tokenizer has {tok.vocab_size} tokens but the model {ckpt.model_config.vocab_size}")
    model = model_from_checkpoint(ckpt)
    if quantize == "int8":
        return Int8Model(model), tok, ckpt.path
    return to_device(model, device), tok, ckpt.path


def default_start_ids(tokenizer) -> list[int]:
    """What an empty prompt starts from: BOS when the tokenizer has one, else a newline."""
    if tokenizer.bos_id is not None:
        return [tokenizer.bos_id]
    ids = tokenizer.encode("\n")
    if not ids:
        raise ConfigError("the prompt is empty and this tokenizer has neither BOS nor a newline token")
    return ids


def encode_prompt(tok, prompt: str, max_len: int, warn) -> list[int]:
    """Prompt ids: BOS (or a newline) for an empty prompt, BOS first where the tokenizer adds it (an imported
    Llama 3's); a warning for unknown words and for a prompt longer than the context (cropped to its last
    tokens)."""
    with warnings.catch_warnings(record=True) as caught:  # the tokenizer's warnings, as one plain line each
        warnings.simplefilter("always")
        ids = tok.encode(prompt) if prompt else default_start_ids(tok)
    for w in caught:
        warn(f"warning: {w.message}")
    if not ids:
        ids = default_start_ids(tok)
    elif getattr(tok, "add_bos", False) and ids[0] != tok.bos_id:
        ids = [tok.bos_id, *ids]  # Llama 3's models expect it (tokenizers/vocab_bpe.py's add_bos)
    if tok.unk_id is not None and tok.unk_id in ids:
        warn("warning: the prompt holds words this tokenizer does not know; they become <unk>")
    if len(ids) >= max_len:
        warn(f"warning: the prompt has {len(ids)} tokens, more than the context allows; keeping the last {max_len - 1}")
        ids = ids[-(max_len - 1):]
        if getattr(tok, "add_bos", False):  # the BOS stays first
            ids[0] = tok.bos_id
    return ids


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """text up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopStream:
    """The text of a sampled continuation, released piece by piece as tokens arrive. Held back:
    text that could still be the start of a stop string, and half of a UTF-8 character. After the
    first stop string (`stopped`), nothing more is released; the stop string itself never is."""

    def __init__(self, tokenizer, stops=()):
        self.stops = list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1  # characters a stop string could still claim
        self.text = IncrementalText(tokenizer)
        self.tail = ""  # the decoded text of text.ids, cut at a stop string
        self.sent = 0  # characters of tail already released
        self.stopped = False

    @property
    def count(self) -> int:
        """Tokens added so far."""
        return self.text.count

    def add(self, token: int) -> str:
        """Append one token; returns the text that became safe to show ("" if none)."""
        # text dropped from the front of the tail was released and is beyond the reach of a stop string
        self.sent -= self.text.add(token, keep_chars=len(self.tail) - self.sent + self.hold + 8)
        tail = self.text.tail
        # a stop string can only end in the new text: search from just before it
        cut = min((i for i in (tail.find(s, max(0, self.sent - len(s))) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            tail, self.stopped = tail[:cut], True
        self.tail = tail
        ready = len(tail) if self.stopped else len(tail) - self.hold
        if tail.endswith("\ufffd"):  # half of a UTF-8 character: wait for the rest
            ready = min(ready, len(tail.rstrip("\ufffd")))
        if ready <= self.sent:
            return ""
        piece, self.sent = tail[self.sent:ready], ready
        return piece

    def finish(self) -> str:
        """The text still held back, when no token follows."""
        piece, self.sent = self.tail[self.sent:], len(self.tail)
        return piece


class IncrementalText:
    """The text of a growing list of token ids, decoded in time linear in its length: decoding every
    id after each new one would be quadratic. `tail` is the decoded text of the last ids; a prefix
    of it is dropped once it was sent and decoding it separately is shown to give the same text (true
    at most boundaries of char and BPE tokens, never inside a UTF-8 character); for a tokenizer where
    it never holds (word: spaces between words) the whole text is decoded after every token."""

    TAIL = 32

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []  # the ids whose text is `tail`
        self.tail = ""
        self.count = 0

    def add(self, token: int, keep_chars: int) -> int:
        """Append a token; returns how many characters were dropped from the front of `tail` (the
        last `keep_chars` characters before the new token are always kept)."""
        self.ids.append(token)
        self.count += 1
        ids = self.ids
        if len(ids) > 2 * self.TAIL:
            k = len(ids) - self.TAIL
            head = self.tok.decode(ids[:k])
            rest = self.tok.decode(ids[k:])
            if (len(head) <= len(self.tail) - keep_chars and self.tail.startswith(head)
                    and not head.endswith("\ufffd") and head + rest == self.tok.decode(ids)):
                del self.ids[:k]
                self.tail = rest
                return len(head)
        self.tail = self.tok.decode(ids)
        return 0
