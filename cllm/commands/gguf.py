"""`python cli.py export-gguf CHECKPOINT OUT.gguf`: llama.cpp's GGUF file, architecture gpt2 or llama
(see cllm/interop/gguf.py for every metadata key and tensor name)."""
from cllm.interop.gguf import export_gguf


def export_main(checkpoint: str, out: str, *, dtype: str = "f32") -> int:
    """Write CHECKPOINT's model and byte-level BPE tokenizer as a GGUF file that llama.cpp runs
    (llama-cli -m OUT.gguf) with the `gguf` package, llama.cpp's own writer.

    Args:
        checkpoint: a step directory, a latest/best link or a run directory
        out: the .gguf file to write
        dtype: weight matrices as f32, f16 or q8_0 (norms and biases stay f32)
    """
    path, config, size = export_gguf(str(checkpoint), str(out), str(dtype))
    print(f"wrote {out}: GGUF {config.arch} ({dtype}, {size / 2**20:.1f} MiB) from {path}; {config.num_layers} layers, "
          f"{config.num_heads} heads, {config.embed_dim} dims, context {config.max_seq_len}, "
          f"vocab {config.vocab_size:,}")
    return 0


COMMANDS = {"export-gguf": export_main}
