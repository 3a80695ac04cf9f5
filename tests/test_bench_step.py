"""bench/step.py's memory report runs and measures a real training step (not only its imports)."""
import json
import subprocess
import sys

from train_helpers import ROOT

# bench/ itself stays off sys.path: its kernels.py would shadow the `kernels` package transformers imports
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import step  # noqa: E402


def test_memory_report_covers_the_training_state():
    args = ["--configs", "none", "--memory-configs", "baby", "--no-torch"]
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])["memory"]["baby"]["numba"]
    assert "error" not in report, report
    # one step holds at least the parameters, their gradients and AdamW's two moments (float32)
    cfg = step.CONFIGS["baby"]["cfg"]
    state_mib = 4 * 4 * cfg.num_parameters() / 2**20
    assert report["peak_rss_mib"] > report["above_imports_mib"] > state_mib
