"""The command dispatcher (cllm/cli.py): its --help lists every command with a line, without
importing any command module, and a mistyped command is one error line naming the nearest one."""
import subprocess
import sys
from pathlib import Path

from cllm import cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=ROOT)


def test_every_command_has_a_summary_line():
    assert set(cli.SUMMARIES) == set(cli.COMMANDS)
    assert all(line and "\n" not in line for line in cli.SUMMARIES.values())


def test_help_lists_every_command_with_its_line():
    for args in (["--help"], [], ["-h"], ["help"]):
        r = run_cli(*args)
        assert r.returncode == 0 and not r.stderr, r.stderr
        lines = r.stdout.splitlines()
        for name, summary in cli.SUMMARIES.items():
            assert any(line.split() and line.split()[0] == name and line.endswith(summary) for line in lines), (
                name, r.stdout)
        assert "COMMAND --help" in r.stdout  # how to see a command's flags
        assert "import" not in r.stdout.lower().replace("import-", "")  # for users: no word of lazy imports


def test_help_imports_no_command_module():
    code = ("import sys; from cllm.cli import main; main(['--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('cllm.commands.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]", r.stdout


def test_unknown_command_is_one_line_naming_the_nearest():
    for typed, near in (("frobnicate", None), ("trian", "train"), ("genrate", "generate"), ("export-gguff",
                                                                                             "export-gguf")):
        r = run_cli(typed, "--flag")
        assert r.returncode == 2
        assert r.stderr.startswith(f"error: unknown command '{typed}'") and len(r.stderr.splitlines()) == 1, r.stderr
        assert "see 'cli.py --help'" in r.stderr and "usage" not in r.stderr and "Traceback" not in r.stderr
        assert (f"did you mean {near}?" in r.stderr) if near else "did you mean" not in r.stderr, r.stderr
