"""`python cli.py serve`: an OpenAI-style completions API, a health check and a small page.

    engine = Engine.load("checkpoints/run")        # the model, generating on worker threads
    app = create_app(engine, ServerSettings())     # an aiohttp Application (see server.py)
"""
from cllm.serve.engine import CompletionRequest, Engine
from cllm.serve.server import ServerSettings, create_app, host_warning

__all__ = ["CompletionRequest", "Engine", "ServerSettings", "create_app", "host_warning"]
