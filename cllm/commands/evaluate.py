"""`python cli.py evaluate CHECKPOINT TEXT_OR_DIR [flags]`: loss, perplexity and bits per byte (cllm/evaluate.py
does the work; for a folder of images, bits per dimension and accuracy: cllm/vision/likelihood.py; for
conversations, the loss on the assistant's tokens: cllm/chat/kind.py)."""
import json
import sys

from cllm.errors import ConfigError
from cllm.evaluate import evaluate_checkpoint
from cllm.multiple_choice import evaluate_task_file
from cllm.vision.likelihood import format_confusion


def main(checkpoint: str = "checkpoints", data: str | None = None, *, text: str | None = None,
         stride: int | None = None, batch_size: int = 8, json: bool = False, progress: bool = True,
         threads: int | None = None, tokenizer: str | None = None, classify: str | None = None,
         device: str = "cpu", quantize: str | None = None, task: str | None = None):
    """Loss, perplexity and bits per byte of CHECKPOINT on DATA (a text file or a directory of them,
    read and cleaned as training reads it; `-` reads standard input) or on --text STRING.

    The model reads windows of its context length that start every --stride tokens; every token is
    scored once. Conversations (a JSONL file of {"messages": [...]} rows, a folder of them, or a prepared
    chat dataset, whose held-out conversations it reads) are scored as training validates them: the mean
    loss over the assistant's tokens, each conversation one window from its start.

    Args:
      checkpoint: a run directory, a step directory or a latest/best link
      data: a text file, a directory of them, - for standard input, or conversations (JSONL)
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
      task: a multiple-choice task (JSONL lines {"context", "choices", "gold"}): accuracy and length-normalized
        accuracy by likelihood, as lm-evaluation-harness scores HellaSwag or ARC (cllm/multiple_choice.py)
    """
    if task is not None:
        if data is not None or text is not None:
            raise ConfigError("--task scores a multiple-choice file; give it without DATA or --text")
        result = evaluate_task_file(checkpoint, task, threads=threads, tokenizer=tokenizer, device=device,
                                    quantize=quantize, progress=progress)
        if json:
            sys.stdout.write(_json.dumps(result) + "\n")
        else:
            print(f"checkpoint   {result['checkpoint']}")
            print(f"task         {result['task']} ({result['questions']} questions)")
            print(f"acc          {result['acc']:.4f} +- {result['acc_stderr']:.4f}")
            print(f"acc_norm     {result['acc_norm']:.4f} +- {result['acc_norm_stderr']:.4f}")
        return 0
    result = evaluate_checkpoint(checkpoint, data, text=text, stride=stride, batch_size=batch_size, progress=progress,
                                 threads=threads, tokenizer=tokenizer, device=device, quantize=quantize,
                                 classify=classify)
    if json:
        sys.stdout.write(_json.dumps(result) + "\n")
    elif "bits_per_dim" in result:  # a folder of images (cllm/vision/likelihood.py)
        _print_images(result)
    elif "conversations" in result:  # conversations (cllm/chat/kind.py)
        _print_conversations(result)
    else:
        _print_text(result)
    return 0


_json = json  # `json` is also a flag of main


def _print_text(result: dict) -> None:
    bpb = result["bits_per_byte"]
    print(f"checkpoint   {result['checkpoint']}")
    print(f"data         {result['data']} ({result['documents']} document(s), {result['bytes']:,} bytes, "
          f"{result['tokens']:,} tokens)")
    print(f"windows      {result['windows']} of {result['context']} tokens, stride {result['stride']}")
    print(f"loss         {result['loss']:.4f} nats/token")
    print(f"perplexity   {result['perplexity']:.3f}")
    print(f"bits/byte    {bpb:.4f}" if bpb is not None else "bits/byte    n/a")


def _print_conversations(result: dict) -> None:
    beyond = result["assistant_tokens"] - result["scored_tokens"]
    print(f"checkpoint   {result['checkpoint']}")
    held = "held-out " if result["held_out"] else ""
    print(f"data         {result['data']} ({result['conversations']:,} {held}conversation(s); "
          f"{result['bad_rows_report']})")
    print(f"assistant    {result['scored_tokens']:,} tokens scored, each conversation one window of "
          f"{result['context']} tokens from its start"
          + (f" ({beyond:,} more lie beyond it)" if beyond else ""))
    print(f"loss         {result['loss']:.4f} nats/token (the assistant's tokens, as training's val_loss)")
    print(f"perplexity   {result['perplexity']:.3f}")


def _print_images(result: dict) -> None:
    print(f"checkpoint   {result['checkpoint']}")
    print(f"data         {result['data']} ({result['images']} images of {result['size']})")
    print(f"bits/dim     {result['bits_per_dim']:.4f} (-log2 p(image) per pixel and channel)")
    if "bits_per_dim_joint" in result:
        print(f"  with label {result['bits_per_dim_joint']:.4f} (-log2 p(true class, image), as training's validation)")
    if "accuracy" in result:
        print(f"accuracy     {result['accuracy']:.4f} (classification by likelihood)")
        print("confusion matrix (rows: true class, columns: predicted)")
        print(format_confusion(result["classes"], result["confusion_matrix"]))
