"""The grouped-query attention kernels for NVIDIA GPUs (cllm/kernels/cuda/gqa.py) in Numba's CUDA simulator,
against the CPU kernels (cllm/kernels/gqa.py) to 1e-5 of each tensor's scale.

As tests/test_cuda_sim.py: without NUMBA_ENABLE_CUDASIM=1 this file is one test that runs it again under
pytest in a child process with the simulator on (tests/cuda_sim_helpers.py), plus a compile of every
kernel to PTX for sm_90 where NVIDIA's NVVM is installed. For one test's own output:
    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python -m pytest -q tests/test_gqa_cuda_sim.py
Shapes are tiny and odd: the simulator runs every GPU thread as a Python thread.
"""
import numpy as np
import pytest
from cuda_sim_helpers import SIMULATED, patch_simulator, run_in_simulator


def _every_kernel_compiles_for_a_gpu():
    # the typing and lowering the simulator never does, with the GPU's block sizes (no GPU needed)
    from numba import cuda
    from numba import types as t

    import cllm.kernels.cuda.gqa as G
    from cllm.kernels.cuda._common import SIM

    assert not SIM
    fa, i, f, b = t.float32[::1], t.int64, t.float32, t.boolean
    signatures = {
        G._gqa_forward: (fa,) * 3 + (i,) * 4 + (f,),
        G._gqa_backward_rows: (fa,) * 5 + (i,) * 4 + (f, b),
        G._gqa_backward_keys: (fa,) * 5 + (i,) * 4 + (f, b),
        G._kv_write: (fa,) * 3 + (i,) * 7,
        G._attend_cached: (fa,) * 5 + (i,) * 7 + (f,),
    }
    try:
        ptx, _ = cuda.compile_ptx(G._kv_write.py_func, signatures[G._kv_write], cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 (NVVM missing raises the driver layer's own errors)
        pytest.skip(f"no NVVM to compile with ({type(exc).__name__}: {exc}); pip install -e '.[cuda]'")
    for kernel, sig in signatures.items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        assert ".entry" in ptx and ".target sm_90" in ptx, kernel.py_func.__name__


if not SIMULATED:
    test_every_kernel_compiles_for_a_gpu = _every_kernel_compiles_for_a_gpu

    def test_simulator_suite():
        run_in_simulator(__file__)
else:
    patch_simulator()
    from numba import cuda

    import cllm.kernels as K
    import cllm.kernels.cuda as G

    F32 = np.float32
    RNG = np.random.default_rng(23)
    TOL = 1e-5

    def rand(n):
        return RNG.standard_normal(n).astype(F32)

    def close(got, want, name):
        got = got.copy_to_host() if hasattr(got, "copy_to_host") else got
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL * max(np.abs(want).max(), 1e-30), err_msg=name)

    # (B, T, NH, NKV, hs): groups of 2 and 3 query heads, one kv head for all, and NKV == NH
    SIZES = [(2, 5, 4, 2, 3), (1, 6, 3, 1, 4), (2, 4, 2, 2, 5)]

    @pytest.mark.parametrize("B,T,NH,NKV,hs", SIZES)
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_forward_and_backward(B, T, NH, NKV, hs, overwrite):
        W = (NH + 2 * NKV) * hs
        qkv, dout = rand(B * T * W), rand(B * T * NH * hs)
        out, att = np.empty(B * T * NH * hs, F32), np.empty(B * NH * T * T, F32)
        K.gqa_forward(out, att, qkv, B, T, NH, NKV, hs)
        d_out, d_att = cuda.device_array(out.size, F32), cuda.device_array(att.size, F32)
        d_qkv = cuda.to_device(qkv)
        G.gqa_forward(d_out, d_att, d_qkv, B, T, NH, NKV, hs)
        close(d_out, out, "gqa out")
        close(d_att, att, "gqa att")
        dqkv = np.full(qkv.size, np.nan, F32) if overwrite else rand(qkv.size)
        d_dqkv = cuda.to_device(dqkv)
        K.gqa_backward(dqkv, dout, qkv, att, B, T, NH, NKV, hs, overwrite)
        G.gqa_backward(d_dqkv, cuda.to_device(dout), d_qkv, cuda.to_device(att), B, T, NH, NKV, hs, overwrite)
        close(d_dqkv, dqkv, "gqa dqkv")

    @pytest.mark.parametrize("B,T,NH,NKV,hs", SIZES)
    def test_prefill_then_decode(B, T, NH, NKV, hs):
        # positions 0..2 in one prefill, then one decode step each; the caches hold the same kv heads
        W = (NH + 2 * NKV) * hs
        maxT = T + 2
        qkv = rand(B * T * W).reshape(B, T, W)
        n = B * NKV * maxT * hs
        kc, vc = np.zeros(n, F32), np.zeros(n, F32)
        d_kc, d_vc = cuda.to_device(kc), cuda.to_device(vc)
        head = np.ascontiguousarray(qkv[:, :3]).ravel()
        out = np.empty(B * 3 * NH * hs, F32)
        K.gqa_prefill(out, head, kc, vc, B, 3, NH, NKV, hs, 0, maxT)
        d_out = cuda.device_array(out.size, F32)
        G.gqa_prefill(d_out, cuda.to_device(head), d_kc, d_vc, B, 3, NH, NKV, hs, 0, maxT)
        close(d_out, out, "prefill out")
        for t in range(3, T):
            row = np.ascontiguousarray(qkv[:, t]).ravel()
            out = np.empty(B * NH * hs, F32)
            K.gqa_decode(out, row, kc, vc, B, NH, NKV, hs, t, maxT)
            d_out = cuda.device_array(out.size, F32)
            G.gqa_decode(d_out, cuda.to_device(row), d_kc, d_vc, B, NH, NKV, hs, t, maxT)
            close(d_out, out, f"decode out at {t}")
        np.testing.assert_array_equal(d_kc.copy_to_host(), kc)
        np.testing.assert_array_equal(d_vc.copy_to_host(), vc)
