"""`python cli.py generate "prompt" [flags]`: text from a checkpoint, through the KV cache."""
import sys

# Flags whose values are text: python-fire would turn "1984" into an int and "a,b" into a tuple, so
# run_command hands them (and the positional prompt) to fire as quoted string literals.
TEXT_FLAGS = {"prompt", "stop"}
LIST_FLAGS = {"stop"}  # --stop may be repeated
BOOL_FLAGS = {"stream", "nostream", "interactive", "nointeractive", "help", "json", "nojson"}


def main(prompt="", *, checkpoint="checkpoints", max_new_tokens=200, temperature=0.8, top_k=0, top_p=1.0,
         repeat_penalty=1.0, repeat_last_n=64, num_samples=1, seed=None, stop=(), beam_width=0,
         length_penalty=1.0, stream=None, interactive=False, threads=None, tokenizer=None):
    """Generate text after PROMPT from a checkpoint (default: the latest under checkpoints/).

    Sampling: --temperature 0.8 (0 is greedy) --top-k 0 --top-p 1.0 --repeat-penalty 1.0
    --repeat-last-n 64 --seed N (same seed, same text) --num-samples 1 --max-new-tokens 200.
    --stop STRING (repeatable) ends the text at the first stop string; EOS always ends it.
    --beam-width K: beam search with length normalization (--length-penalty 1.0); with
    --num-samples N prints the N best beams and their scores. --stream prints tokens as they come
    (the default on a terminal). --interactive reads prompts line by line until EOF (Ctrl-D).
    --tokenizer PATH for a checkpoint without one (e.g. imported from llm.c).
    """
    return run_generate(prompt=prompt, checkpoint=checkpoint, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, top_p=top_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                        num_samples=num_samples, seed=seed, stop=stop, beam_width=beam_width,
                        length_penalty=length_penalty, stream=sys.stdout.isatty() if stream is None else stream,
                        interactive=interactive, threads=threads, tokenizer=tokenizer)


def _as_stops(stop) -> list[str]:
    from cllm.errors import ConfigError

    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if not all(isinstance(s, str) and s for s in stops):
        raise ConfigError("--stop takes non-empty strings")
    return stops


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """text up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def load_for_generation(checkpoint: str, tokenizer_path=None, threads=None):
    """(model, tokenizer, checkpoint path) with a clear error for anything missing."""
    from cllm.checkpoint import load_checkpoint, model_from_checkpoint
    from cllm.errors import CheckpointError
    from cllm.runtime import configure_threads
    from cllm.tokenizers import load_tokenizer

    configure_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    path = tokenizer_path or ckpt.tokenizer_path
    if path is None:
        raise CheckpointError(f"checkpoint {ckpt.path!r} has no tokenizer.json; pass --tokenizer PATH")
    tok = load_tokenizer(path)
    if tok.vocab_size != ckpt.model_config.vocab_size:
        raise CheckpointError(f"the tokenizer has {tok.vocab_size} tokens but the model {ckpt.model_config.vocab_size}")
    return model_from_checkpoint(ckpt), tok, ckpt.path


def encode_prompt(tok, prompt: str, max_len: int, warn) -> list[int]:
    """Prompt ids: BOS (or a newline) for an empty prompt; a warning for unknown words and for a
    prompt longer than the context (cropped to its last tokens)."""
    from cllm.training import default_start_ids

    import warnings

    with warnings.catch_warnings(record=True) as caught:  # the tokenizer's warnings, as one plain line each
        warnings.simplefilter("always")
        ids = tok.encode(prompt) if prompt else default_start_ids(tok)
    for w in caught:
        warn(f"warning: {w.message}")
    if not ids:
        ids = default_start_ids(tok)
    if tok.unk_id is not None and tok.unk_id in ids:
        warn("warning: the prompt holds words this tokenizer does not know; they become <unk>")
    if len(ids) >= max_len:
        warn(f"warning: the prompt has {len(ids)} tokens, more than the context allows; keeping the last {max_len - 1}")
        ids = ids[-(max_len - 1):]
    return ids


def run_generate(prompt, checkpoint, max_new_tokens, temperature, top_k, top_p, repeat_penalty, repeat_last_n,
                 num_samples, seed, stop, beam_width, length_penalty, stream, interactive, threads, tokenizer):
    from cllm.errors import ConfigError
    from cllm.generation import Generator, SamplingConfig

    if not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {num_samples!r}")
    if seed is not None and not isinstance(seed, int):
        raise ConfigError(f"--seed must be an integer, got {seed!r}")
    stops = _as_stops(stop)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed)
    sampling.validate()
    if not isinstance(beam_width, int) or beam_width < 0:
        raise ConfigError(f"--beam-width must be a non-negative integer, got {beam_width!r}")
    model, tok, _ = load_for_generation(checkpoint, tokenizer, threads)
    gen = Generator(model, eos_id=tok.eos_id)
    warned = set()

    def warn(msg):
        if msg not in warned:
            warned.add(msg)
            print(msg, file=sys.stderr)

    def one_prompt(text: str):
        ids = encode_prompt(tok, text, model.config.max_seq_len, warn)
        if beam_width:
            beams = gen.beam_search(ids, beam_width, max_new_tokens, length_penalty)
            for i, (new_ids, score) in enumerate(beams[:num_samples]):
                body, _ = cut_at_stop(tok.decode(new_ids), stops)
                if num_samples > 1:
                    print(f"--- beam {i + 1}, score {score:.4f}")
                print(text + body)
            return
        for i in range(num_samples):
            cfg = SamplingConfig(**{**sampling.__dict__, "seed": None if seed is None else seed + i})
            if i:
                print("---------------")
            sample(ids, text, cfg)

    def sample(ids, text, cfg):
        new_ids, printed = [], 0
        hold = max((len(s) for s in stops), default=1) - 1  # text that could still start a stop string
        if stream:
            sys.stdout.write(text)
            sys.stdout.flush()
        body = ""
        for token in gen.stream(ids, cfg):
            new_ids.append(token)
            body, stopped = cut_at_stop(tok.decode(new_ids), stops)
            if stream:
                ready = len(body) if stopped else len(body) - hold
                if body.endswith("\ufffd"):  # half of a UTF-8 character: wait for the rest
                    ready = min(ready, len(body.rstrip("\ufffd")))
                if ready > printed:
                    sys.stdout.write(body[printed:ready])
                    sys.stdout.flush()
                    printed = ready
            if stopped:
                break
        if stream:
            sys.stdout.write(body[printed:] + "\n")
            sys.stdout.flush()
        else:
            print(text + body)

    if interactive:
        print("interactive: type a prompt and press Enter; Ctrl-D ends.", file=sys.stderr)
        for line in sys.stdin:
            one_prompt(line.rstrip("\n"))
        return 0
    one_prompt(prompt)
    return 0
