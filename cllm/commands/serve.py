"""`python cli.py serve [--checkpoint DIR] [--host 127.0.0.1] [--port 8000]`: the HTTP API and page."""
import os
import sys


def main(checkpoint: str = "checkpoints", *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
         max_concurrent: int = 2, max_queue: int = 32, max_tokens_cap: int = 1024, max_prompt_chars: int = 32768,
         max_body_bytes: int = 262144, max_n: int = 8, model_name: str | None = None, threads: int | None = None,
         tokenizer: str | None = None, device: str = "cpu"):
    """Serve CHECKPOINT (default: the latest under checkpoints/) over HTTP until Ctrl-C.

    GET /health, GET /v1/models, POST /v1/completions (OpenAI's completions API: prompt, max_tokens,
    temperature, top_p, stop, seed, n, stream, echo; extensions top_k, repeat_penalty, beam_width,
    ignore_eos) and a page at /.

    Args:
      checkpoint: a run directory, a step directory or a latest/best link
      host: address to listen on (another than loopback prints a warning)
      port: port to listen on (0 picks a free one)
      api_key: require `Authorization: Bearer KEY` on /v1/ (none: the CLLM_API_KEY environment
        variable, else no key)
      max_concurrent: generations at once
      max_queue: requests waiting for a generation slot (beyond: 429 with Retry-After)
      max_tokens_cap: largest max_tokens a request may ask for
      max_prompt_chars: longest prompt, in characters
      max_body_bytes: largest request body
      max_n: most choices per request
      model_name: the model's name in the API (none: RUN/step_N)
      threads: Numba threads of each generation worker (none: the cores / --max-concurrent)
      tokenizer: a tokenizer file, for a checkpoint without one
      device: cpu, cuda or cuda:N (an NVIDIA GPU through the [cuda] extra)
    """
    from cllm.errors import ConfigError

    def positive(name, value, minimum=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")

    positive("port", port, 0)
    if port > 65535:
        raise ConfigError(f"--port must be at most 65535, got {port}")
    for name in ("max_concurrent", "max_tokens_cap", "max_prompt_chars", "max_body_bytes", "max_n"):
        positive(name, locals()[name])
    positive("max_queue", max_queue, 0)
    api_key = api_key if api_key is not None else os.environ.get("CLLM_API_KEY") or None
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ConfigError("--api-key must be a non-empty string")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"--host must be a host name or address, got {host!r}")

    from cllm.runtime import cpu_count
    from cllm.serve import Engine, ServerSettings, create_app, host_warning

    if threads is None:  # the cores shared among the workers (bench/serve.py: faster than all cores each)
        threads = max(1, cpu_count() // max_concurrent)

    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    engine = Engine.load(checkpoint, tokenizer, threads, model_name, device)
    engine.warm_up()
    settings = ServerSettings(max_concurrent=max_concurrent, max_queue=max_queue, max_tokens_cap=max_tokens_cap,
                              max_prompt_chars=max_prompt_chars, max_body_bytes=max_body_bytes, max_n=max_n,
                              api_key=api_key)
    return run_server(create_app(engine, settings), host, port, engine)


def run_server(app, host: str, port: int, engine) -> int:
    import asyncio
    import signal

    from cllm.errors import ConfigError

    async def serve():
        from cllm.serve.server import start_site

        try:
            runner, bound = await start_site(app, host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                              "choose another --port or --host") from None
        shown = f"[{host}]" if ":" in host else host
        print(f"serving {engine.model_id} ({engine.checkpoint_path}) on http://{shown}:{bound}/ ; Ctrl-C stops",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        try:  # SIGTERM (a service manager, a container) stops as cleanly as Ctrl-C
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    print("stopped", file=sys.stderr)
    return 0
