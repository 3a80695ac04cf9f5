"""`python cli.py train [DATA] [flags]`: train a GPT; see cllm/training.py for the loop."""


def main(data=None, *, tokenizer=None, vocab_size=None, embed_dim=None, num_layers=None, num_heads=None,
         batch_size=None, grad_accum=None, seq_len=None, learning_rate=None, min_lr=None, warmup_steps=None, weight_decay=None,
         grad_clip=None, beta1=None, beta2=None, epochs=None, max_steps=None, max_time=None, eval_interval=None,
         checkpoint_interval=None, sample_interval=None, sample_prompt=None, sample_tokens=None, keep_last=None,
         seed=None, resume=None, threads=None, val_fraction=None, checkpoint_dir=None, progress=None):
    """Train a GPT on DATA (a file, a directory, a prepared dataset or a crawl's output; default: data/).

    Several processes: `mpirun -n N python cli.py train ...` trains data-parallel (the [mpi] extra);
    --grad-accum K runs K micro-batches of --batch-size per optimizer step.

    Model: --embed-dim 128 --num-layers 4 --num-heads 4 --seq-len 64 (the context length), --tokenizer
    char|word|bpe with --vocab-size (word/bpe). Optimization: --batch-size 12 --learning-rate 1e-3
    --min-lr 1e-4 (cosine decay) --warmup-steps 100 --weight-decay 0 --grad-clip 5 (0: none) --beta1 0.9
    --beta2 0.999. Length: --max-steps or --max-time SECONDS end training; with neither, --epochs
    (default 1; an epoch is as many tokens as the training split holds). Logging: --eval-interval 250
    (validation over the whole split), --sample-interval 500 with --sample-prompt, --checkpoint-interval
    500, --keep-last 3, --checkpoint-dir checkpoints/run (metrics.jsonl, loss.png, step_NNNNNN/,
    latest, best). --resume latest|best|PATH continues a run exactly. --seed 1337, --threads N,
    --val-fraction 0.1.
    """
    given = {k: v for k, v in dict(locals()).items() if v is not None}
    from cllm.distributed import world
    from cllm.training import build_config, train

    comm = world()
    if comm.size == 1:
        summary = train(build_config(given))
    else:
        # a rank that fails must take the others down with it: they would wait forever in the next
        # collective operation otherwise
        import sys
        import traceback

        from cllm.errors import CLLMError

        try:
            summary = train(build_config(given))
        except CLLMError as exc:
            sys.stderr.write(f"error (rank {comm.rank}): {exc}\n")
            sys.stderr.flush()
            comm.abort(exc.exit_code)
        except BaseException:
            traceback.print_exc()
            sys.stderr.write(f"error: rank {comm.rank} of {comm.size} failed; aborting all ranks\n")
            sys.stderr.flush()
            comm.abort(1)
    return 130 if summary["interrupted"] else 0
