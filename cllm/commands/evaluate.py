"""`python cli.py evaluate CHECKPOINT TEXT_OR_DIR [flags]`: loss, perplexity and bits per byte."""
import json
import sys

from cllm.errors import ConfigError
from cllm.vision.dataset import is_image_source


def main(checkpoint: str = "checkpoints", data: str | None = None, *, text: str | None = None,
         stride: int | None = None, batch_size: int = 8, json: bool = False, progress: bool = True,
         threads: int | None = None, tokenizer: str | None = None, classify: str | None = None,
         device: str = "cpu", quantize: str | None = None):
    """Loss, perplexity and bits per byte of CHECKPOINT on DATA (a text file or a directory of them,
    read and cleaned as training reads it; `-` reads standard input) or on --text STRING.

    The model reads windows of its context length that start every --stride tokens; every token is
    scored once.

    Args:
      checkpoint: a run directory, a step directory or a latest/best link
      data: a text file, a directory of them, or - for standard input
      text: the text itself, instead of DATA
      stride: tokens between window starts (none: the context, disjoint windows, as training's
        validation loss; smaller: more context per token, slower)
      batch_size: windows per forward pass
      json: print one JSON line
      progress: show a progress bar
      threads: Numba threads (none: every core)
      tokenizer: a tokenizer file, for a checkpoint without one
      classify: an image model: classify the images of this folder (a folder per class) by likelihood
      device: cpu, cuda or cuda:N (an NVIDIA GPU through the [cuda] extra; text models)
      quantize: int8: score the model whose weight matrices are rounded as generate --quantize int8
        rounds them (text models)
    """
    if classify is not None or (data is not None and data != "-" and is_image_source(data)):
        if quantize is not None:
            raise ConfigError("--quantize is for text models")
        # bits per dimension, accuracy, confusion matrix; imported here: only image models need cllm/vision/cli.py
        from cllm.vision.cli import evaluate_command

        return evaluate_command(checkpoint, data, classify, batch_size, json, threads, tokenizer)

    if (data is None) == (text is None):
        raise ConfigError("give the text to evaluate: a file or directory (python cli.py evaluate CHECKPOINT PATH), "
                          "`-` for standard input, or --text STRING")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int)):
        raise ConfigError(f"--stride must be a positive integer, got {stride!r}")
    result = run_evaluate(checkpoint, data, text, stride, batch_size, progress, threads, tokenizer, device, quantize)
    if json:
        sys.stdout.write(_json.dumps(result) + "\n")
    else:
        bpb = result["bits_per_byte"]
        print(f"checkpoint   {result['checkpoint']}")
        print(f"data         {result['data']} ({result['documents']} document(s), {result['bytes']:,} bytes, "
              f"{result['tokens']:,} tokens)")
        print(f"windows      {result['windows']} of {result['context']} tokens, stride {result['stride']}")
        print(f"loss         {result['loss']:.4f} nats/token")
        print(f"perplexity   {result['perplexity']:.3f}")
        print(f"bits/byte    {bpb:.4f}" if bpb is not None else "bits/byte    n/a")
    return 0


_json = json  # `json` is also a flag of main


def run_evaluate(checkpoint, data, text, stride, batch_size, progress, threads, tokenizer, device="cpu",
                 quantize=None) -> dict:
    import os

    from cllm.checkpoint import load_checkpoint
    from cllm.completion import load_for_generation
    from cllm.errors import DataError
    from cllm.evaluate import dataset_cleaning, encode_corpus, encode_documents, evaluate_stream
    from cllm.quantize import check_scheme, dequantize_in_place

    check_scheme(quantize, device)
    model, tok, path = load_for_generation(checkpoint, tokenizer, threads, device)
    if quantize == "int8":  # the training forward over the int8 values (cllm/quantize.py)
        dequantize_in_place(model)
    cleaning = dataset_cleaning(load_checkpoint(path)) or {}
    if text is not None or data == "-":
        from cllm.data.clean import clean_text
        from cllm.data.corpus import CLEANING_DEFAULTS

        raw = text if text is not None else sys.stdin.read()
        opts = {**CLEANING_DEFAULTS, **cleaning}
        opts["strip_gutenberg_boilerplate"] = opts.pop("strip_gutenberg")
        doc = clean_text(str(raw), **opts)
        tokens, nbytes, ndocs = encode_documents([doc] if doc.strip() else [], tok)
        source = "--text" if text is not None else "<stdin>"
    else:
        data = str(data)
        if not os.path.exists(data):
            raise DataError(f"no such file or directory: {data!r}; give a text file or directory, "
                            "or the text itself with --text")
        tokens, nbytes, ndocs = encode_corpus(data, tok, cleaning, progress=progress)
        source = data
    result = evaluate_stream(model, tokens, nbytes, stride=stride, batch_size=batch_size, progress=progress)
    return {"checkpoint": path, "data": source, "documents": ndocs, **result}
