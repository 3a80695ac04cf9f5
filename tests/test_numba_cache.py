"""Numba's on-disk cache never hands back a kernel compiled from other code or other options: the
cache directory is keyed by a hash of every kernel source, the compile options in
cllm/kernels/_common.py and the versions (cllm/kernels/_common.py numba_cache_dir). Checked on a copy of the
kernels package, in fresh processes, as an updated checkout would run."""
import json
import os
import shutil
import subprocess
import sys

from train_helpers import ROOT

# compile (or load) one kernel; report where it came from and how it was compiled
PROBE = """
import json, numpy as np
from numba.core import config
import cllm.kernels.residual as r
a = np.ones(8, np.float32)
r.residual_forward(np.empty_like(a), a, a, 8)
s = r.residual_forward.stats
print(json.dumps({"hits": sum(s.cache_hits.values()), "misses": sum(s.cache_misses.values()),
                  "nogil": r.residual_forward.targetoptions.get("nogil"), "dir": config.CACHE_DIR}))
"""


def _probe(copy) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(copy)
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=copy, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_changed_options_or_sources_compile_anew(tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "cllm" / "kernels", copy / "cllm" / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "cllm" / "__init__.py", copy / "cllm" / "__init__.py")

    first = _probe(copy)
    assert first["misses"] == 1 and first["nogil"] is True
    assert first["dir"].startswith(str(copy / "cllm" / "kernels" / "__pycache__" / "numba-"))
    again = _probe(copy)
    assert again == {**first, "hits": 1, "misses": 0}  # unchanged code: loaded from the cache

    # the nogil change of the past: only cllm/kernels/_common.py changes, not the kernel's own file
    _edit(copy / "cllm" / "kernels" / "_common.py", "parallel=True, nogil=True,", "parallel=True, nogil=False,")
    flipped = _probe(copy)
    assert flipped["misses"] == 1 and flipped["hits"] == 0 and flipped["nogil"] is False
    assert flipped["dir"] != first["dir"]

    # a file the kernel does not live in, but could inline from, changes too
    with open(copy / "cllm" / "kernels" / "fastexp.py", "a") as f:
        f.write("\n# edited\n")
    assert _probe(copy)["misses"] == 1
