"""From a conversation to the assistant's reply: the messages rendered by the tokenizer's chat template (with the
generation prompt), tokens generated until the end-of-turn token, the stop strings or the token limit, and the
reply's text released piece by piece. POST /v1/chat/completions (cllm/serve/) runs it; the loop is also the
server's completions loop (no end-of-turn ids there).

    ids = chat_prompt_ids(tok, messages, model.config.max_seq_len)    # a ChatTemplateError for a bad conversation
    ends = end_of_turn_ids(tok)                                        # ChatML: {<|im_end|>, EOS}
    reply = generate_reply(Generator(model, eos_id=tok.eos_id), tok, ids, SamplingConfig(temperature=0), ends,
                           on_text=print)
    reply.text, reply.tokens, reply.finish_reason                      # "stop" or "length"
"""
from __future__ import annotations

import dataclasses

from cllm.chat.template import apply_chat_template, chat_text
from cllm.completion import StopStream
from cllm.errors import TokenizerError

# the content of the assistant message end_of_turn_ids renders: text no template changes and no reply holds
_PROBE = "CLLM end-of-turn probe 7f3a"


@dataclasses.dataclass
class Reply:
    text: str  # without the end-of-turn token and anything from a stop string on
    tokens: int  # tokens generated, the end-of-turn token not counted (as the server never counts EOS)
    finish_reason: str  # "stop": end of turn, EOS or a stop string; "length": max_new_tokens reached


def _specials(tokenizer) -> dict[str, int]:
    # an imported byte-level BPE keeps its file's specials in `specials`; CLLM's own bpe in `special_tokens`
    return getattr(tokenizer, "specials", None) or getattr(tokenizer, "special_tokens", None) or {}


def end_of_turn_ids(tokenizer) -> frozenset[int]:
    """The ids that end an assistant turn: the tokenizer's EOS, and the special token its chat template writes right
    after an assistant message (ChatML's <|im_end|>, Llama 3's <|eot_id|>, a Mistral template's </s>). Found by
    rendering a short conversation (with a system message too, for templates that want one), so any template's
    own token is found; a template that refuses both leaves EOS alone."""
    ends = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
    specials = _specials(tokenizer)
    turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    for conversation in (turn, [{"role": "system", "content": "Be brief."}, *turn]):
        try:
            text = chat_text(tokenizer, conversation)
        except TokenizerError:
            continue
        rest = text[text.rfind(_PROBE) + len(_PROBE):] if _PROBE in text else ""
        found = [(rest.find(s), -len(s), s) for s in specials if s in rest]
        if found:  # the first one after the message (the longest of those starting there)
            ends.add(specials[min(found)[2]])
        break
    return frozenset(ends)


def chat_prompt_ids(tokenizer, messages, context: int) -> list[int]:
    """The ids of `messages` rendered with the generation prompt; a conversation longer than the context keeps its
    last context - 1 tokens (as completions crop a prompt, cllm/completion.py encode_prompt), a leading BOS
    kept first. Raises ChatTemplateError (a TokenizerError) when the template or the messages are wrong."""
    ids = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
    if len(ids) >= context:
        head = ids[0]
        ids = ids[-(context - 1):]
        if head == tokenizer.bos_id:
            ids[0] = head
    return ids


def generate_reply(generator, tokenizer, ids: list[int], cfg, end_ids=frozenset(), stops=(), on_text=None,
                   cancelled=None, constraint=None) -> Reply:
    """Generate from `ids` (a cllm.generation.Generator, its SamplingConfig `cfg`) until a token of `end_ids`, EOS,
    a stop string, cfg.max_new_tokens tokens or `cancelled()` (checked after every token). on_text(piece) gets
    the text as it becomes safe to show (a possible stop string's start and half a UTF-8 character held back).
    `constraint`: grammar-constrained decoding (Generator._steps); its completion is a "stop"."""
    out = StopStream(tokenizer, stops)
    pieces = []
    ended = False

    def release(piece: str) -> None:
        if piece:
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)

    for token in generator.stream(ids, cfg, constraint=constraint):
        if token in end_ids:
            ended = True
            break
        release(out.add(token))
        if out.stopped or (cancelled is not None and cancelled()):
            break
    release(out.finish())
    # fewer tokens than asked: EOS ended it (or a cancel, whose reason nobody reads)
    ended = ended or (constraint is not None and constraint.done)
    reason = "stop" if ended or out.stopped or out.count < cfg.max_new_tokens else "length"
    return Reply("".join(pieces), out.count, reason)
