"""`python cli.py generate "prompt" [flags]`: text from a checkpoint, through the KV cache."""
import dataclasses
import sys

from cllm.completion import StopStream, cut_at_stop, encode_prompt, load_for_generation
from cllm.errors import ConfigError
from cllm.generation import Generator, SamplingConfig
from cllm.vision.cli import generate_images

OPTIONS = SamplingConfig  # the sampling flags: SamplingConfig's fields, with their defaults and help


def main(prompt: str = "", *, checkpoint: str = "checkpoints", num_samples: int = 1, stop: list[str] = (),
         beam_width: int = 0, length_penalty: float = 1.0, stream: bool | None = None, interactive: bool = False,
         threads: int | None = None, tokenizer: str | None = None, image_out: str | None = None,
         class_: str | None = None, complete: str | None = None, keep_rows: int | None = None,
         device: str = "cpu", quantize: str | None = None, **sampling):
    """Generate text after PROMPT from a checkpoint (default: the latest under checkpoints/).

    EOS always ends the text (unless --ignore-eos); so does the first --stop string. With --beam-width K
    and --num-samples N it prints the N best beams and their scores. The sampling flags are
    SamplingConfig's (cllm/generation.py).

    Args:
      prompt: the text to continue (empty: start from BOS or a newline)
      checkpoint: a run directory, a step directory or a latest/best link
      num_samples: texts to generate (seeds seed, seed+1, ...)
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
      quantize: int8: quantize the weight matrices at load time (int8, one float32 scale per output row) and
        decode from them (faster, a quarter of the memory; text models)
    """
    cfg = _checked_settings(SamplingConfig(**sampling), num_samples, beam_width)
    if image_out is not None or class_ is not None or complete is not None:
        if quantize is not None:
            raise ConfigError("--quantize is for text models")
        return generate_images(checkpoint, image_out, num_samples, class_, complete, cfg.temperature, cfg.top_k,
                               cfg.top_p, cfg.seed, threads, tokenizer, keep_rows)
    stream = sys.stdout.isatty() if stream is None else stream
    return run_generate(prompt, checkpoint, cfg, num_samples, _as_stops(stop), beam_width, length_penalty, stream,
                        interactive, threads, tokenizer, device, quantize)


def _as_stops(stop) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if not all(isinstance(s, str) and s for s in stops):
        raise ConfigError("--stop takes non-empty strings")
    return stops


def run_generate(prompt, checkpoint, sampling, num_samples, stops, beam_width, length_penalty, stream, interactive,
                 threads, tokenizer, device="cpu", quantize=None):
    model, tok, _ = load_for_generation(checkpoint, tokenizer, threads, device, quantize)
    gen = Generator(model, eos_id=tok.eos_id)
    warn = _warn_once()

    def one_prompt(text: str):
        ids = encode_prompt(tok, text, model.config.max_seq_len, warn)
        if beam_width:
            _print_beams(gen, tok, ids, text, beam_width, sampling.max_new_tokens, length_penalty, num_samples, stops)
            return
        for i in range(num_samples):
            seed = None if sampling.seed is None else sampling.seed + i
            if i:
                print("---------------")
            _print_sample(gen, tok, ids, text, dataclasses.replace(sampling, seed=seed), stops, stream)

    if interactive:
        print("interactive: type a prompt and press Enter; Ctrl-D ends.", file=sys.stderr)
        for line in sys.stdin:
            one_prompt(line.rstrip("\n"))
        return 0
    one_prompt(prompt)
    return 0


def _checked_settings(sampling: SamplingConfig, num_samples, beam_width) -> SamplingConfig:
    """The sampling settings and the flags beside them, each checked (ConfigError naming the flag)."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {num_samples!r}")
    sampling.validate()
    if not isinstance(beam_width, int) or beam_width < 0:
        raise ConfigError(f"--beam-width must be a non-negative integer, got {beam_width!r}")
    return sampling


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
    beams = gen.beam_search(ids, beam_width, max_new_tokens, length_penalty)
    for i, (new_ids, score) in enumerate(beams[:num_samples]):
        body, _ = cut_at_stop(tok.decode(new_ids), stops)
        if num_samples > 1:
            print(f"--- beam {i + 1}, score {score:.4f}")
        print(text + body)


def _print_sample(gen, tok, ids, text, cfg, stops, stream) -> None:
    """Sample one text after `ids` (the prompt `text`) and print it, as it comes when `stream`; it ends at EOS,
    the token limit or the first stop string (cllm/completion.py's StopStream holds back what may start one)."""
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
