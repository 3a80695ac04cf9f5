"""`python cli.py export-hf CHECKPOINT OUT_DIR` and `python cli.py import-hf HF_DIR CHECKPOINT_DIR`:
HuggingFace transformers' GPT-2 or Llama-family directory (cllm/interop/hf.py and hf_llama.py name the tensors)."""
from cllm.interop.hf import export_hf, import_hf


def export_main(checkpoint: str, out_dir: str) -> int:
    """Write CHECKPOINT's model and tokenizer as a directory that transformers loads as GPT-2, or as
    LlamaForCausalLM for a llama checkpoint (AutoModelForCausalLM.from_pretrained(OUT_DIR),
    AutoTokenizer.from_pretrained(OUT_DIR)).

    Args:
        checkpoint: a step directory, a latest/best link or a run directory
        out_dir: the directory to create (new or empty)
    """
    path, config = export_hf(checkpoint, out_dir)
    kind = "LlamaForCausalLM" if config.arch == "llama" else "GPT-2"
    print(f"wrote {out_dir}: {kind} for transformers from {path}; {config.num_layers} layers, {config.num_heads} "
          f"heads, {config.embed_dim} dims, context {config.max_seq_len}, vocab {config.vocab_size:,}")
    return 0


def import_main(hf_dir: str, checkpoint_dir: str) -> int:
    """Read a GPT-2, Llama, Qwen2 or Mistral HuggingFace directory (config.json + model.safetensors or its
    shards, and tokenizer.json when present) into a new checkpoint CHECKPOINT_DIR/step_000000; a pickle
    (.bin) is refused, never loaded.
    Fine-tune it with `cli.py train DATA --init-from CHECKPOINT_DIR`.

    Args:
        hf_dir: the HuggingFace model directory
        checkpoint_dir: the new checkpoint directory
    """
    path, has_tokenizer = import_hf(hf_dir, checkpoint_dir)
    print(f"wrote checkpoint {path}" + ("" if has_tokenizer else "; it has no tokenizer (the directory had no "
                                                                   "tokenizer.json): generate with --tokenizer PATH"))
    return 0


COMMANDS = {"export-hf": export_main, "import-hf": import_main}
