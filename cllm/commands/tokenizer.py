"""`python cli.py tokenizer ACTION ...`: train, inspect and use tokenizers.

    cli.py tokenizer train DATA --kind bpe --vocab-size 4096 --out tok.json
    cli.py tokenizer encode tok.json "some text"        # prints the ids
    cli.py tokenizer decode tok.json 17,42,256          # prints the text
    cli.py tokenizer stats tok.json                     # size, training statistics (JSON)
    cli.py tokenizer export-hf tok.json tokenizer.json  # HuggingFace tokenizer.json (bpe, wordpiece)
    cli.py tokenizer export-vocab tok.json vocab.txt    # BERT's vocab.txt (wordpiece)
    cli.py tokenizer import PATH --out tok.json         # HF tokenizer.json, vocab.txt, GPT-2 vocab.json, *.tiktoken
"""


def main(action: str = None, *args, kind: str = "bpe", vocab_size: int = None, out: str = "tokenizer.json", progress: bool = True,
         pattern: str = None, score: str = "likelihood", **cleaning):
    """Train, inspect, use and import tokenizers (actions: train, encode, decode, stats, export-hf,
    export-vocab, import)."""
    import json

    from cllm.errors import TokenizerError
    from cllm.tokenizers import load_tokenizer, train_tokenizer

    def need(n, usage):
        if len(args) != n:
            raise TokenizerError(f"usage: cli.py tokenizer {usage}")

    if action == "train":
        need(1, "train DATA --kind {word,char,bpe,wordpiece} --vocab-size N --out tok.json")
        from cllm.data import open_corpus

        corpus = open_corpus(str(args[0]), progress=progress, **cleaning)
        tok = train_tokenizer(kind, corpus, vocab_size, progress=progress, **({"score": score} if kind == "wordpiece" else {}))
        tok.save(out)
        print(f"wrote {out}: {tok.kind} tokenizer, {tok.vocab_size:,} ids, trained on {corpus.stats.summary()}")
    elif action == "encode":
        need(2, "encode TOKENIZER TEXT")
        print(" ".join(map(str, load_tokenizer(args[0]).encode(str(args[1])))))
    elif action == "decode":
        need(2, "decode TOKENIZER IDS (comma- or space-separated)")
        raw = args[1] if isinstance(args[1], (list, tuple)) else str(args[1]).replace(",", " ").split()
        try:
            ids = [int(x) for x in raw]
        except ValueError:
            raise TokenizerError(f"ids must be integers, got {args[1]!r}") from None
        print(load_tokenizer(args[0]).decode(ids))
    elif action == "stats":
        need(1, "stats TOKENIZER")
        print(json.dumps(load_tokenizer(args[0]).stats(), ensure_ascii=False, indent=1))
    elif action == "export-hf":
        need(2, "export-hf TOKENIZER OUT.json")
        tok = load_tokenizer(args[0])
        if tok.kind not in ("bpe", "bpe-vocab", "wordpiece"):
            raise TokenizerError(f"only bpe and wordpiece tokenizers export to HuggingFace's format; {args[0]} is a {tok.kind} tokenizer")
        tok.export_hf(str(args[1]))
        print(f"wrote {args[1]}")
    elif action == "export-vocab":
        need(2, "export-vocab TOKENIZER vocab.txt")
        tok = load_tokenizer(args[0])
        if tok.kind != "wordpiece":
            raise TokenizerError(f"only wordpiece tokenizers have a vocab.txt; {args[0]} is a {tok.kind} tokenizer")
        tok.export_vocab_txt(str(args[1]))
        print(f"wrote {args[1]}")
    elif action == "import":
        need(1, "import PATH --out tok.json [--pattern gpt2|cl100k|o200k]")
        from cllm.tokenizers.imports import import_tokenizer

        tok = import_tokenizer(str(args[0]), pattern=pattern)
        tok.save(out)
        print(f"wrote {out}: {tok.kind} tokenizer, {tok.vocab_size:,} ids, from {args[0]}")
    else:
        raise TokenizerError(f"unknown tokenizer action {action!r}; use train, encode, decode, stats, export-hf, export-vocab or import")
    return None
