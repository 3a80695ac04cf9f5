"""Fixtures shared by the serving tests (tests/test_serve*.py); pytest finds them here without an import.

The imports are inside the fixtures: pytest loads this file for every test run, and cllm.serve with
tests/serve_helpers.py (which imports training and the kernels) costs seconds at start-up that most test
files never use.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """An Engine on the tiny plain-text run (char tokenizer, tests/serve_helpers.py tiny_run), warmed up."""
    from serve_helpers import tiny_run

    from cllm.serve import Engine

    e = Engine.load(str(tiny_run(tmp_path_factory)["run"]))
    e.warm_up()
    return e


@pytest.fixture(scope="module")
def chat_engine(tmp_path_factory):
    """An Engine on the tiny chat run (bpe tokenizer with ChatML's template, tests/serve_helpers.py chat_run)."""
    from serve_helpers import chat_run

    from cllm.serve import Engine

    e = Engine.load(str(chat_run(tmp_path_factory)))
    e.warm_up()
    return e


@pytest.fixture
async def client(aiohttp_client, engine):
    """A test client of the app over `engine` with the default ServerSettings."""
    from cllm.serve import create_app

    return await aiohttp_client(create_app(engine))
