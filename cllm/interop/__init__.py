"""Model files other programs read and write: llm.c's model and token files (llmc.py), HuggingFace
transformers directories (hf.py) and llama.cpp's GGUF (gguf.py). CLLM's model is GPT-2's layout, so
each is a renaming of the same tensors."""
