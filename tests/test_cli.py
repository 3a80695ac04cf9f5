"""The command dispatcher: unknown commands and help, without importing heavy modules."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=ROOT)


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in ("train", "generate", "prepare", "scrape"):
        assert name in r.stdout


def test_unknown_command_is_one_clear_error():
    r = run_cli("frobnicate")
    assert r.returncode == 2
    assert "unknown command 'frobnicate'" in r.stderr
    assert "Traceback" not in r.stderr
