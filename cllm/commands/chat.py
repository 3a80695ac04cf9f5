"""`python cli.py chat --checkpoint CKPT`: talk with a chat model in the terminal (cllm/chat/session.py)."""
import dataclasses
import sys

from cllm.chat.session import ChatSession
from cllm.completion import load_for_generation
from cllm.errors import CLLMError, ConfigError
from cllm.generation import SamplingConfig

OPTIONS = SamplingConfig  # the sampling flags, as `cli.py generate` takes them

HELP = "chat: type a message and press Enter; /reset forgets the conversation, /exit or Ctrl-D ends."


def main(*, checkpoint: str = "checkpoints", system: str | None = None, threads: int | None = None,
         tokenizer: str | None = None, device: str = "cpu", quantize: str | None = None, **sampling):
    """Chat with a model fine-tuned on conversations (or an imported one with a chat template).

    Each line read is a user message; the reply streams to standard output and stays in the conversation,
    which is rendered whole with the tokenizer's chat template before every reply. The reply ends at the
    template's end-of-turn token (<|im_end|> for ChatML) or after --max-new-tokens. When the conversation
    outgrows the model's context, its oldest turns are dropped (the system message stays). /reset forgets the
    conversation, /exit (or end of input, or Ctrl-C) ends. Piped input works:
    printf 'Hello\\n/exit\\n' | python cli.py chat --checkpoint CKPT. The sampling flags are generate's.

    Args:
      checkpoint: a run directory, a step directory or a latest/best link
      system: a system message that starts the conversation (none: no system message)
      threads: Numba threads (none: every core)
      tokenizer: a tokenizer file, for a checkpoint without one
      device: cpu, cuda or cuda:N (an NVIDIA GPU through the [cuda] extra)
      quantize: int8: quantize the weight matrices at load time and decode from them (as generate's)
    """
    cfg = SamplingConfig(**sampling)
    cfg.validate()
    if system is not None and not system.strip():
        raise ConfigError("--system is empty; give the system message's text or leave the flag out")
    model, tok, path = load_for_generation(checkpoint, tokenizer, threads, device, quantize)
    if getattr(tok, "chat_template", None) is None:
        raise ConfigError(f"the tokenizer of {path} has no chat template, so it cannot hold a conversation; chat "
                          "with a model fine-tuned on conversations (docs/training.md, \"Fine-tuning on "
                          "conversations\") or an imported model that has one")
    session = ChatSession(model, tok, system, notify=lambda message: print(message, file=sys.stderr))
    interactive = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8 become U+FFFD, not an error mid-session
        sys.stdin.reconfigure(errors="replace")
    if interactive:
        print(HELP, file=sys.stderr)
    try:
        for turn, line in enumerate(_lines(interactive)):
            text = line.strip()
            if text == "/exit":
                break
            if text == "/reset":
                session.reset()
                if interactive:
                    print("(the conversation is forgotten)", file=sys.stderr)
                continue
            if not text:
                continue
            seed = None if cfg.seed is None else cfg.seed + turn  # a fresh draw per turn, the same per session
            try:
                session.send(text, dataclasses.replace(cfg, seed=seed), on_text=_show)
            except CLLMError as exc:  # one message that cannot be answered (too long): say so, go on
                print(f"error: {exc}", file=sys.stderr)
                continue
            _show("\n")
    except KeyboardInterrupt:  # Ctrl-C ends the session as /exit does
        _show("\n")
    return 0


def _lines(interactive: bool):
    """The user's lines: through input() at a terminal (line editing, a prompt), else standard input's lines."""
    if not interactive:
        yield from sys.stdin
        return
    while True:
        try:
            yield input("> ")
        except EOFError:
            print(file=sys.stderr)
            return


def _show(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()
