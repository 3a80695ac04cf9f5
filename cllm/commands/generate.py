"""`python cli.py generate "prompt" [flags]`: text from a checkpoint, through the KV cache."""
import sys


def main(prompt: str = "", *, checkpoint: str = "checkpoints", max_new_tokens: int = 200, temperature: float = 0.8,
         top_k: int = 0, top_p: float = 1.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
         num_samples: int = 1, seed: int | None = None, stop: list[str] = (), beam_width: int = 0,
         length_penalty: float = 1.0, stream: bool | None = None, interactive: bool = False,
         threads: int | None = None, tokenizer: str | None = None, image_out: str | None = None,
         class_: str | None = None, complete: str | None = None, keep_rows: int | None = None,
         device: str = "cpu"):
    """Generate text after PROMPT from a checkpoint (default: the latest under checkpoints/).

    EOS always ends the text; so does the first --stop string. With --beam-width K and
    --num-samples N it prints the N best beams and their scores.

    Args:
      prompt: the text to continue (empty: start from BOS or a newline)
      checkpoint: a run directory, a step directory or a latest/best link
      max_new_tokens: tokens to generate
      temperature: sampling temperature (0 is greedy)
      top_k: sample among the k most likely tokens (0: all)
      top_p: sample among the smallest set of tokens whose probability reaches p (1: all)
      repeat_penalty: divide the logits of recently seen tokens by this (1: off)
      repeat_last_n: how many recent tokens the repeat penalty looks at
      num_samples: texts to generate (seeds seed, seed+1, ...)
      seed: random seed; the same seed gives the same text (none: a fresh one)
      stop: end the text at the first occurrence of this string (repeatable)
      beam_width: beam search with this many beams (0: sampling)
      length_penalty: beam search's length normalization exponent
      stream: print tokens as they come (none: when standard output is a terminal)
      interactive: read prompts line by line from standard input until EOF (Ctrl-D)
      threads: Numba threads (none: every core)
      tokenizer: a tokenizer file, for a checkpoint without one (e.g. imported from llm.c)
      image_out: an image model: write a grid of --num-samples images to this PNG file
      class_: an image model with classes: sample images of this class (a class folder's name)
      complete: an image model: keep the top half of this image and sample the rest (a grid beside it)
      keep_rows: with --complete, the rows kept (none: half of them)
      device: cpu, cuda or cuda:N (an NVIDIA GPU through the [cuda] extra)
    """
    if image_out is not None or class_ is not None or complete is not None:
        from cllm.vision.cli import generate_images

        return generate_images(checkpoint, image_out, num_samples, class_, complete, temperature, top_k, top_p,
                               seed, threads, tokenizer, keep_rows)
    return run_generate(prompt=prompt, checkpoint=checkpoint, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, top_p=top_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                        num_samples=num_samples, seed=seed, stop=stop, beam_width=beam_width,
                        length_penalty=length_penalty, stream=sys.stdout.isatty() if stream is None else stream,
                        interactive=interactive, threads=threads, tokenizer=tokenizer, device=device)


def _as_stops(stop) -> list[str]:
    from cllm.errors import ConfigError

    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if not all(isinstance(s, str) and s for s in stops):
        raise ConfigError("--stop takes non-empty strings")
    return stops


def run_generate(prompt, checkpoint, max_new_tokens, temperature, top_k, top_p, repeat_penalty, repeat_last_n,
                 num_samples, seed, stop, beam_width, length_penalty, stream, interactive, threads, tokenizer,
                 device="cpu"):
    from cllm.completion import encode_prompt, load_for_generation
    from cllm.generation import Generator, SamplingConfig

    sampling, stops = _checked_settings(max_new_tokens, temperature, top_k, top_p, repeat_penalty, repeat_last_n,
                                        num_samples, seed, stop, beam_width)
    model, tok, _ = load_for_generation(checkpoint, tokenizer, threads, device)
    gen = Generator(model, eos_id=tok.eos_id)
    warn = _warn_once()

    def one_prompt(text: str):
        ids = encode_prompt(tok, text, model.config.max_seq_len, warn)
        if beam_width:
            _print_beams(gen, tok, ids, text, beam_width, max_new_tokens, length_penalty, num_samples, stops)
            return
        for i in range(num_samples):
            cfg = SamplingConfig(**{**sampling.__dict__, "seed": None if seed is None else seed + i})
            if i:
                print("---------------")
            _print_sample(gen, tok, ids, text, cfg, stops, stream)

    if interactive:
        print("interactive: type a prompt and press Enter; Ctrl-D ends.", file=sys.stderr)
        for line in sys.stdin:
            one_prompt(line.rstrip("\n"))
        return 0
    one_prompt(prompt)
    return 0


def _checked_settings(max_new_tokens, temperature, top_k, top_p, repeat_penalty, repeat_last_n, num_samples, seed,
                      stop, beam_width):
    """(SamplingConfig, stop strings) of the flags, each checked (ConfigError naming the flag)."""
    from cllm.errors import ConfigError
    from cllm.generation import SamplingConfig

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
    return sampling, stops


def _warn_once():
    """A function that prints each distinct message once, to standard error."""
    warned = set()

    def warn(msg):
        if msg not in warned:
            warned.add(msg)
            print(msg, file=sys.stderr)

    return warn


def _print_beams(gen, tok, ids, text, beam_width, max_new_tokens, length_penalty, num_samples, stops) -> None:
    """Beam search from `ids`; print the `num_samples` best beams (with their scores when several), each cut at
    the first stop string."""
    from cllm.completion import cut_at_stop

    beams = gen.beam_search(ids, beam_width, max_new_tokens, length_penalty)
    for i, (new_ids, score) in enumerate(beams[:num_samples]):
        body, _ = cut_at_stop(tok.decode(new_ids), stops)
        if num_samples > 1:
            print(f"--- beam {i + 1}, score {score:.4f}")
        print(text + body)


def _print_sample(gen, tok, ids, text, cfg, stops, stream) -> None:
    """Sample one text after `ids` (the prompt `text`) and print it, as it comes when `stream`; it ends at EOS,
    the token limit or the first stop string (cllm/completion.py's StopStream holds back what may start one)."""
    from cllm.completion import StopStream

    out, pieces = StopStream(tok, stops), [text]
    if stream:
        sys.stdout.write(text)
        sys.stdout.flush()
    for token in gen.stream(ids, cfg):
        piece = out.add(token)
        if stream and piece:
            sys.stdout.write(piece)
            sys.stdout.flush()
        pieces.append(piece)
        if out.stopped:
            break
    if stream:
        sys.stdout.write(out.finish() + "\n")
        sys.stdout.flush()
    else:
        print("".join(pieces) + out.finish())
