"""A chat session: the conversation so far, kept within the model's context, and one turn of it (messages ->
ids by the tokenizer's chat template -> tokens until the end of the turn -> the reply's text).

    session = ChatSession(model, tokenizer, system="Answer in one sentence.", notify=print)
    reply = session.send("What is two plus two?", SamplingConfig(temperature=0), on_text=show)
    session.reset()                                  # forget the turns, keep the system message

History: before each reply the whole conversation is rendered with the generation prompt; while that prompt plus
the reply budget (--max-new-tokens, at most half the context) exceeds the model's context, the oldest whole turn
(a user message and the replies after it) is dropped, never the system message nor the newest user message. The
reply then gets what is left of the context, at most --max-new-tokens, so the generator never has to slide its
cache past the system message.

A turn's generation is cllm/chat/generate.py's generate_reply, the step POST /v1/chat/completions runs too.
"""
from __future__ import annotations

import dataclasses

from cllm.chat.generate import end_of_turn_ids, generate_reply
from cllm.chat.template import apply_chat_template, check_template
from cllm.errors import ConfigError
from cllm.generation import Generator, SamplingConfig


class ChatSession:
    """The messages of one conversation with a model whose tokenizer has a chat template (module doc)."""

    def __init__(self, model, tokenizer, system: str | None = None, notify=None):
        """notify(message): called once, the first time older turns are dropped (none: say nothing)."""
        self.model, self.tokenizer = model, tokenizer
        self.context = model.config.max_seq_len
        check_template(tokenizer)  # one clear error for a tokenizer without a chat template
        self.end_ids = end_of_turn_ids(tokenizer)
        self.generator = Generator(model, eos_id=tokenizer.eos_id)
        self.system = [{"role": "system", "content": system}] if system else []
        self.turns: list[dict] = []  # the user and assistant messages after the system message, oldest first
        self.notify = notify
        self.dropped = False  # whether turns were dropped yet (the notice is given once)

    @property
    def messages(self) -> list[dict]:
        return self.system + self.turns

    def reset(self) -> None:
        """Forget every turn; the system message stays."""
        self.turns = []

    def prompt(self, budget: int) -> list[int]:
        """The ids of the conversation with the generation prompt, the oldest turns dropped while the prompt
        plus `budget` tokens exceed the context (as far as dropping can go)."""
        while True:
            ids = apply_chat_template(self.tokenizer, self.messages, add_generation_prompt=True)
            if len(ids) + budget <= self.context or not self._drop_oldest_turn():
                return ids

    def _drop_oldest_turn(self) -> bool:
        users = [i for i, m in enumerate(self.turns) if m["role"] == "user"]
        if len(users) < 2:  # only the newest user message is left
            return False
        del self.turns[:users[1]]
        if not self.dropped and self.notify:
            self.notify(f"note: older turns were dropped to keep the conversation within the model's context of "
                        f"{self.context} tokens (the system message stays)")
        self.dropped = True
        return True

    def send(self, text: str, sampling: SamplingConfig, on_text=None) -> str:
        """Add the user message `text`, generate the reply (on_text gets it piece by piece), keep it in the
        history and return it. A message that leaves no room for a reply is refused (ConfigError) and forgotten."""
        self.turns.append({"role": "user", "content": text})
        try:
            ids = self.prompt(min(sampling.max_new_tokens, self.context // 2))
        except BaseException:
            self.turns.pop()
            raise
        if len(ids) >= self.context:
            self.turns.pop()
            raise ConfigError(f"the message does not fit: with the system message it makes a prompt of {len(ids)} "
                              f"tokens, and the model's context is {self.context}; say it in fewer words")
        limit = min(sampling.max_new_tokens, self.context - len(ids))
        sampling = dataclasses.replace(sampling, max_new_tokens=limit)
        if sampling.ignore_eos:  # --ignore-eos: only the token limit ends the reply
            reply = generate_reply(Generator(self.model, eos_id=None), self.tokenizer, ids, sampling, on_text=on_text)
        else:
            reply = generate_reply(self.generator, self.tokenizer, ids, sampling, self.end_ids, on_text=on_text)
        self.turns.append({"role": "assistant", "content": reply.text})
        return reply.text
