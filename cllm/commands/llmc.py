"""`python cli.py export-llmc CHECKPOINT OUT.bin` and `python cli.py import-llmc IN.bin CHECKPOINT_DIR`:
llm.c's fp32 model file (see cllm/interop/llmc.py for its layout)."""
from cllm.interop.llmc import export_checkpoint, import_model_file


def export_main(checkpoint: str, out: str):
    """Write CHECKPOINT's model as llm.c's fp32 model file OUT (256 x int32 header, magic 20240326,
    version 3, then the float32 parameters).

    Args:
      checkpoint: a run directory, a step directory or a latest/best link
      out: the llm.c model file to write
    """
    path, config = export_checkpoint(str(checkpoint), str(out))
    print(f"wrote {out}: llm.c fp32 model (version 3) from {path}; maxT {config.max_seq_len}, V {config.vocab_size}, "
          f"Vp {config.padded_vocab_size}, L {config.num_layers}, NH {config.num_heads}, C {config.embed_dim}, "
          f"{config.num_parameters():,} parameters")
    return 0


def import_main(model_file: str, checkpoint_dir: str, *, tokenizer: str | None = None):
    """Read llm.c's fp32 model file MODEL_FILE (version 3, or 1 with an unpadded vocabulary) into a new
    checkpoint under CHECKPOINT_DIR (step_000000, with `latest`).

    Args:
      model_file: llm.c's model file
      checkpoint_dir: the run directory to create
      tokenizer: a CLLM tokenizer file of the model's vocabulary, stored with the checkpoint (none:
        pass it to generate)
    """
    path = import_model_file(str(model_file), str(checkpoint_dir), None if tokenizer is None else str(tokenizer))
    print(f"wrote checkpoint {path}" + ("" if tokenizer else "; it has no tokenizer: generate with --tokenizer PATH"))
    return 0


COMMANDS = {"export-llmc": export_main, "import-llmc": import_main}
