"""`python cli.py serve [--checkpoint DIR] [--host 127.0.0.1] [--port 8000]`: the HTTP API and page."""
import asyncio
import os
import signal
import sys

from cllm.errors import ConfigError
from cllm.runtime import cpu_count
from cllm.serve import Engine, create_app, host_warning
from cllm.serve.server import ServerSettings, start_site

OPTIONS = ServerSettings  # the limits and the API key: ServerSettings' fields, with their defaults and help


def main(checkpoint: str = "checkpoints", *, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
         threads: int | None = None, batch_threads: int | None = None, tokenizer: str | None = None,
         device: str = "cpu", quantize: str | None = None, **limits):
    """Serve CHECKPOINT (default: the latest under checkpoints/) over HTTP until Ctrl-C.

    GET /health, GET /v1/models, POST /v1/completions (OpenAI's completions API: prompt, max_tokens,
    temperature, top_p, stop, seed, n, stream, echo; extensions top_k, repeat_penalty, beam_width,
    ignore_eos), POST /v1/chat/completions (a model with a chat template: docs/serving.md "Chat") and a page
    at /. The limits and --api-key are ServerSettings' (cllm/serve/server.py).

    Args:
      checkpoint: a run directory, a step directory or a latest/best link
      host: address to listen on (another than loopback prints a warning)
      port: port to listen on (0 picks a free one)
      model_name: the model's name in the API (none: RUN/step_N)
      threads: Numba threads of each generation worker that runs a request outside the batch: log-probabilities,
        structured output, beam search (none: the cores / --max-concurrent)
      batch_threads: Numba threads of the batched decoding of the other requests (none: --threads if given,
        else all the cores)
      tokenizer: a tokenizer file, for a checkpoint without one
      device: cpu, cuda or cuda:N (an NVIDIA GPU through the [cuda] extra)
      quantize: int8: quantize the weight matrices at load time and decode from them (cllm/quantize.py)
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must lie in [0, 65535], got {port}")
    if not host:
        raise ConfigError(f"--host must be a host name or address, got {host!r}")
    limits.setdefault("api_key", os.environ.get("CLLM_API_KEY") or None)
    settings = ServerSettings(**limits)
    settings.validate()
    if batch_threads is not None and batch_threads < 1:
        raise ConfigError(f"--batch-threads must be >= 1, got {batch_threads}")
    if batch_threads is None:  # one thread decodes every batched request: all the cores unless told
        batch_threads = threads or cpu_count()
    if threads is None:  # the cores shared among the workers (bench/serve.py: faster than all cores each)
        threads = max(1, cpu_count() // settings.max_concurrent)
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    engine = Engine.load(checkpoint, tokenizer, threads, model_name, device, quantize)
    engine.batch_threads = batch_threads
    engine.warm_up()
    return run_server(create_app(engine, settings), host, port, engine)


def run_server(app, host: str, port: int, engine) -> int:
    async def serve():
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
