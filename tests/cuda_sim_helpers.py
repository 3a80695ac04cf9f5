"""Running tests in Numba's CUDA simulator (tests/test_cuda_sim.py, tests/test_model_interface.py).

The simulator must be switched on before numba.cuda is first imported and must not leak into the other
tests' processes: a test file without NUMBA_ENABLE_CUDASIM=1 runs its CUDA tests again under pytest in a
child process with the simulator on (run_in_simulator), and that child calls patch_simulator() before
it builds anything on the device.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def run_in_simulator(test_file: str, *pytest_args: str) -> None:
    """pytest on test_file in a child with the simulator on (and a short GIL switch interval: the
    simulator's block manager polls its threads at every barrier); fails with its output unless every
    selected test passed and none was skipped."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "CLLM_SIM_SWITCH": "1e-5"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, *pytest_args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.strip().splitlines()[-1], r.stdout[-2000:]


def patch_simulator() -> None:
    """In a simulated process: the GIL switch interval run_in_simulator asks for. (The simulator's shared-array
    fix is cllm/kernels/cuda/_common.py's, applied when that module is imported under the simulator.)"""
    if not SIMULATED:
        pytest.fail("patch_simulator() runs only under NUMBA_ENABLE_CUDASIM=1")
    sys.setswitchinterval(float(os.environ.get("CLLM_SIM_SWITCH", "1e-5")))
