"""The Llama family's CUDA kernels (cllm/kernels/cuda/rmsnorm.py, rope.py, swiglu.py) in Numba's CUDA simulator,
against the CPU kernels (cllm/kernels/) to 1e-5 of each tensor's scale.

As tests/test_cuda_sim.py: without NUMBA_ENABLE_CUDASIM=1 this file is one test that runs it again under pytest
in a child process with the simulator on (tests/cuda_sim_helpers.py), plus a compilation of every kernel to PTX
for sm_90 where NVIDIA's NVVM is installed. For one test's own output:
    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python -m pytest -q tests/test_llama_cuda_sim.py
Shapes are tiny and odd (the simulator runs every GPU thread as a Python thread).
"""
import numpy as np
import pytest
from cuda_sim_helpers import SIMULATED, patch_simulator, run_in_simulator


def _every_kernel_compiles_for_a_gpu():
    # NVVM compiles each kernel with the GPU's block sizes to PTX for sm_90: the typing and lowering the
    # simulator never does. No GPU is needed.
    from numba import cuda
    from numba import types as t

    import cllm.kernels.cuda.rmsnorm as R
    import cllm.kernels.cuda.rope as P
    import cllm.kernels.cuda.swiglu as S
    from cllm.kernels.cuda._common import SIM

    assert not SIM
    fa, i, f, b = t.float32[::1], t.int64, t.float32, t.boolean
    signatures = {
        R._rmsnorm_forward: (fa,) * 4 + (i, i, f), R._rmsnorm_backward_rows: (fa,) * 5 + (i, i, b),
        R._rmsnorm_backward_weight: (fa,) * 4 + (i, i), P._rope: (fa,) * 3 + (i,) * 6 + (f,),
        S._swiglu_forward: (fa, fa, i, i), S._swiglu_backward: (fa, fa, fa, i, i, b),
    }
    try:
        cuda.compile_ptx(S._swiglu_forward.py_func, signatures[S._swiglu_forward], cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 (NVVM missing raises the driver layer's own errors)
        pytest.skip(f"no NVVM to compile with ({type(exc).__name__}: {exc}); pip install -e '.[cuda]'")
    for kernel, sig in signatures.items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        assert ".entry" in ptx and ".target sm_90" in ptx, kernel.py_func.__name__
        assert ".f64" not in ptx, f"float64 arithmetic in {kernel.py_func.__name__}"  # float32 stays float32


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

    def rand(*shape, scale=1.0):
        return (RNG.standard_normal(shape) * scale).astype(F32).ravel()

    def dev(x):
        return cuda.to_device(x)

    def close(got, want, name, rtol=1e-5, scale=None):
        # to rtol of the tensor's largest element, or of `scale`: the size of terms that cancel to ~0
        got = got.copy_to_host() if hasattr(got, "copy_to_host") else got
        assert got.dtype == F32
        scale = max(float(np.abs(want).max()), scale or 0.0, 1e-30)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=name)

    @pytest.mark.parametrize("N,C", [(6, 8), (3, 13), (1, 1)])
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_rmsnorm(N, C, overwrite):
        inp, w, dout = rand(N, C, scale=2.0), 1 + rand(C, scale=0.3), rand(N, C)
        out, rstd = np.zeros(N * C, F32), np.zeros(N, F32)
        K.rmsnorm_forward(out, rstd, inp, w, N, C, 1e-6)
        d_out, d_rstd = cuda.device_array(N * C, F32), cuda.device_array(N, F32)
        G.rmsnorm_forward(d_out, d_rstd, dev(inp), dev(w), N, C, 1e-6)
        close(d_out, out, "rmsnorm out")
        close(d_rstd, rstd, "rmsnorm rstd")
        dinp, dw = rand(N, C), rand(C)
        d_dinp, d_dw = dev(dinp), dev(dw)
        K.rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C, overwrite)
        G.rmsnorm_backward(d_dinp, d_dw, dev(dout), dev(inp), dev(w), dev(rstd), N, C, overwrite)
        # with C = 1 the input gradient cancels to ~eps: compared at the size of its terms, w * dout * rstd
        close(d_dinp, dinp, "rmsnorm dinp", scale=float(np.abs(w).max() * np.abs(dout).max() * rstd.max()))
        close(d_dw, dw, "rmsnorm dweight")

    @pytest.mark.parametrize("B,T,NH,NKV,hs,pos0", [(2, 3, 4, 2, 6, 0), (1, 2, 3, 3, 2, 5), (1, 1, 2, 1, 8, 9)])
    def test_rope(B, T, NH, NKV, hs, pos0):
        cos, sin = K.rope_table(pos0 + T, hs, 10000.0, F32)
        qkv = rand(B, T, (NH + 2 * NKV) * hs, scale=1.5)
        want = qkv.copy()
        K.rope_forward(want, cos, sin, B, T, NH, NKV, hs, pos0)
        d_qkv = dev(qkv)
        G.rope_forward(d_qkv, dev(cos), dev(sin), B, T, NH, NKV, hs, pos0)
        close(d_qkv, want, "rope out")
        grad = rand(B, T, (NH + 2 * NKV) * hs)
        d_grad = dev(grad)
        K.rope_backward(grad, cos, sin, B, T, NH, NKV, hs, pos0)
        G.rope_backward(d_grad, dev(cos), dev(sin), B, T, NH, NKV, hs, pos0)
        close(d_grad, grad, "rope dqkv")
        with pytest.raises(ValueError, match="beyond the cos/sin table"):
            G.rope_forward(d_qkv, dev(cos), dev(sin), B, T, NH, NKV, hs, pos0 + 1)

    @pytest.mark.parametrize("N,F", [(3, 5), (2, 8), (1, 1)])
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_swiglu(N, F, overwrite):
        inp, dout = rand(N, 2 * F, scale=3.0), rand(N, F)
        inp[0] = -200.0  # saturated gates: no overflow, silu -> 0
        inp[-F - 1] = 120.0
        out = np.zeros(N * F, F32)
        K.swiglu_forward(out, inp, N, F)
        d_out = cuda.device_array(N * F, F32)
        G.swiglu_forward(d_out, dev(inp), N, F)
        close(d_out, out, "swiglu out")
        dinp = rand(N, 2 * F)
        d_dinp = dev(dinp)
        K.swiglu_backward(dinp, dout, inp, N, F, overwrite)
        G.swiglu_backward(d_dinp, dev(dout), dev(inp), N, F, overwrite)
        close(d_dinp, dinp, "swiglu dinp")
