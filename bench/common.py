"""What the bench scripts share: the --smoke flag and the report of a reference side that cannot run.

Every script under bench/ takes --smoke: its smallest sizes, a few seconds of work through the same
code paths, and the same one JSON line with "smoke": true (tests/test_bench_smoke.py runs each one
so). A reference side whose package `make test` does not install (torch, trafilatura, scikit-learn)
is reported, not failed: its key is null and "not_run" says why.
"""
import importlib.util
import subprocess

SMOKE_HELP = "the smallest sizes: a few seconds through the same code paths (tests/test_bench_smoke.py)"


def missing(module: str, extra: str) -> str | None:
    """None when `module` can be imported, else the reason to report (without importing it: torch
    must be imported before CLLM where it is used, and takes seconds)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module hidden by sys.modules
        found = False
    return None if found else f"{module} is not installed (pip install -e '.[{extra}]')"


def cpu_model() -> str | None:
    """The CPU every speed figure must name: lscpu's "Model name", else /proc/cpuinfo's first "model name"."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
