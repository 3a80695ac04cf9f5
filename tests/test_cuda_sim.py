"""The CUDA kernels and CudaModel (cllm/kernels/cuda, cllm/device.py) in Numba's CUDA simulator.

The simulator must be switched on before numba.cuda is first imported, and must not leak into the
other tests' processes, so without NUMBA_ENABLE_CUDASIM=1 this file is one test that runs this same
file again under pytest in a child process with the simulator on (tests/cuda_sim_helpers.py). For one
test's own output:
    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python -m pytest -q tests/test_cuda_sim.py
Shapes are tiny and odd (T = 5, C = 7, V = 11, ...): the simulator runs every GPU thread as a Python
thread, and odd sizes leave blocks and tiles partly filled. Tolerances are the CPU float32 parity
tests' (tests/test_kernels.py): the reductions add in another order, exp/tanh are libm's here.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from cuda_sim_helpers import ROOT, SIMULATED, patch_simulator, run_in_simulator


def _no_gpu_is_one_line_and_non_zero(tmp_path):
    # without a GPU (and without the simulator) --device cuda refuses in one line; a bad name too
    for device, expect in (("cuda", "no usable NVIDIA GPU"), ("cuda:x", "--device must be cpu, cuda or cuda:N")):
        r = subprocess.run([sys.executable, "cli.py", "generate", "hi", "--checkpoint", str(tmp_path), "--device",
                            device], cwd=ROOT, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}, check=False)
        if device == "cuda" and "no usable NVIDIA GPU" not in r.stderr and r.returncode == 0:
            pytest.skip("this machine has a GPU")
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], r.stderr


def _every_kernel_compiles_for_a_gpu():
    # NVIDIA's NVVM (the [cu12] wheels) compiles each kernel, with the GPU's block and tile sizes, to
    # PTX for sm_90 (H100/H200): the typing and lowering the simulator never does. No GPU is needed.
    from numba import cuda
    from numba import types as t

    import cllm.kernels.cuda._common as C
    import cllm.kernels.cuda.adamw as A
    import cllm.kernels.cuda.attention as AT
    import cllm.kernels.cuda.decode as D
    import cllm.kernels.cuda.elementwise as E
    import cllm.kernels.cuda.layernorm as LN
    import cllm.kernels.cuda.matmul as M
    import cllm.kernels.cuda.softmax as S
    from cllm.kernels.cuda._common import SIM

    assert not SIM  # the GPU's block and tile sizes
    fa, ia, da, i, f, b = t.float32[::1], t.int32[::1], t.float64[::1], t.int64, t.float32, t.boolean
    signatures = {
        E._encoder_forward: (fa, ia, fa, fa, i, i, i), E._embedding_forward: (fa, ia, fa, i, i),
        E._encoder_backward_wte: (fa, fa, ia, i, i),
        E._encoder_backward_wpe: (fa, fa, i, i, i), C._add_partials: (fa, fa, i, i),
        E._gelu_forward: (fa, fa, i), E._gelu_backward: (fa, fa, fa, i, b), E._fill: (fa, f, i), E._scale: (fa, f, i),
        E._residual_forward: (fa, fa, fa, i),
        A._adamw: (fa, fa, fa, fa, i) + (f,) * 8, A._sumsq_partials: (da, fa, i), A._sum_partials: (da, da, i),
        LN._layernorm_forward: (fa,) * 6 + (i, i), LN._layernorm_backward_rows: (fa,) * 6 + (i, i, b),
        LN._layernorm_backward_params: (fa,) * 6 + (i, i),
        M._gemm_tiled: (b, b, i, i, i, f, fa, i, i, fa, i, i, f, fa, i, i), M._bias_rows: (fa, fa, i, i),
        M._bias_backward: (fa, fa, i, i), M._matvec: (fa, fa, fa, fa, i, i, i, b),
        S._softmax_forward: (fa, fa, i, i, i),
        S._crossentropy_forward: (fa, fa, ia, i, i), S._crossentropy_softmax_backward: (fa, fa, fa, ia, i, i, i, b),
        AT._attention_forward: (fa,) * 3 + (i, i, i, f), AT._attention_backward_rows: (fa,) * 5 + (i, i, i, f, b),
        AT._attention_backward_keys: (fa,) * 5 + (i, i, i, f, b), D._embed_rows: (fa, ia, fa, fa, i, i),
        D._kv_write: (fa, fa, ia) + (i,) * 6, D._attend_cached: (fa,) * 4 + (ia,) + (i,) * 6 + (f,),
        # llama's batched decode step (cllm/kernels/cuda/decode.py llama_forward_rows with rows)
        D._llama_rope_rows: (fa, fa, fa, ia) + (i,) * 4, D._llama_kv_write_rows: (fa, fa, ia) + (i,) * 7,
        D._llama_attend_rows: (fa,) * 4 + (ia,) + (i,) * 7 + (f,),
    }
    try:
        cuda.compile_ptx(E._fill.py_func, signatures[E._fill], cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 (NVVM missing raises the driver layer's own errors)
        pytest.skip(f"no NVVM to compile with ({type(exc).__name__}: {exc}); pip install -e '.[cuda]'")
    for kernel, sig in signatures.items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        assert ".entry" in ptx and ".target sm_90" in ptx, kernel.py_func.__name__


if not SIMULATED:
    test_no_gpu_is_one_line_and_non_zero = _no_gpu_is_one_line_and_non_zero
    test_every_kernel_compiles_for_a_gpu = _every_kernel_compiles_for_a_gpu

    def test_simulator_suite():
        run_in_simulator(__file__)
else:
    patch_simulator()
    from numba import cuda
    from test_kernels import np_attention_dscores

    import cllm.kernels as K
    import cllm.kernels.cuda as G
    from cllm.config import ModelConfig
    from cllm.device import CudaAdamW, CudaModel, to_device
    from cllm.model import Model
    from cllm.optim import AdamW

    F32 = np.float32
    RNG = np.random.default_rng(19)

    def rand(*shape, scale=1.0):
        return (RNG.standard_normal(shape) * scale).astype(F32).ravel()

    def dev(x):
        return cuda.to_device(x)

    def close(got, want, rtol, name, scale=None):
        got = got.copy_to_host() if hasattr(got, "copy_to_host") else got
        scale = np.abs(want).max() if scale is None else scale
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-30), err_msg=name)

    @pytest.mark.parametrize("B,T,C", [(2, 5, 8), (1, 3, 7)])
    def test_encoder(B, T, C):
        Vp, maxT = 6, 7
        inp = np.array([1, 3, 1, 5, 0, 3, 3, 2, 1, 4][:B * T], dtype=np.int32)  # repeated ids share dwte rows
        wte, wpe, dout = rand(Vp, C), rand(maxT, C), rand(B, T, C)
        out = np.zeros(B * T * C, F32)
        K.encoder_forward(out, inp, wte, wpe, B, T, C)
        d_out = cuda.device_array(B * T * C, F32)
        G.encoder_forward(d_out, dev(inp), dev(wte), dev(wpe), B, T, C)
        close(d_out, out, 0, "encoder out")
        dwte, dwpe = rand(Vp, C), rand(maxT, C)
        d_dwte, d_dwpe = dev(dwte), dev(dwpe)
        K.encoder_backward(dwte, dwpe, dout, inp, B, T, C)
        G.encoder_backward(d_dwte, d_dwpe, dev(dout), dev(inp), B, T, C)
        close(d_dwte, dwte, 0, "dwte")  # the same order of additions: bit-equal
        close(d_dwpe, dwpe, 0, "dwpe")

    @pytest.mark.parametrize("B,T,C", [(2, 5, 8), (1, 3, 13)])
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_layernorm(B, T, C, overwrite):
        inp, w, b, dout = rand(B, T, C), rand(C), rand(C), rand(B, T, C)
        out, mean, rstd = np.zeros(B * T * C, F32), np.zeros(B * T, F32), np.zeros(B * T, F32)
        K.layernorm_forward(out, mean, rstd, inp, w, b, B, T, C)
        d = {k: cuda.device_array(n, F32) for k, n in (("out", B * T * C), ("mean", B * T), ("rstd", B * T))}
        G.layernorm_forward(d["out"], d["mean"], d["rstd"], dev(inp), dev(w), dev(b), B, T, C)
        close(d["out"], out, 1e-4, "ln out")
        close(d["mean"], mean, 1e-5, "ln mean", scale=1.0)
        close(d["rstd"], rstd, 1e-4, "ln rstd")
        dinp, dw, db = rand(B, T, C), rand(C), rand(C)
        d_dinp, d_dw, d_db = dev(dinp), dev(dw), dev(db)
        K.layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, B, T, C, overwrite)
        G.layernorm_backward(d_dinp, d_dw, d_db, dev(dout), dev(inp), dev(w), dev(mean), dev(rstd), B, T, C,
                             overwrite)
        close(d_dinp, dinp, 1e-4, "ln dinp")
        close(d_dw, dw, 1e-4, "ln dweight")
        close(d_db, db, 1e-5, "ln dbias")

    @pytest.mark.parametrize("B,T,C,OC,bias", [(2, 5, 8, 24, True), (1, 3, 7, 11, False), (1, 9, 5, 3, True)])
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_matmul(B, T, C, OC, bias, overwrite):
        inp, w, b, dout = rand(B, T, C), rand(OC, C), rand(OC) if bias else None, rand(B, T, OC)
        out = np.zeros(B * T * OC, F32)
        K.matmul_forward(out, inp, w, b, B, T, C, OC)
        d_out = dev(np.full(B * T * OC, np.nan, F32))  # bias None: gemm's beta 0 must overwrite NaN
        G.matmul_forward(d_out, dev(inp), dev(w), None if b is None else dev(b), B, T, C, OC)
        tol = 1e-5 * max(C, 4)
        close(d_out, out, tol, "matmul out")
        dinp, dw, db = rand(B, T, C), rand(OC, C), rand(OC) if bias else None
        d_dinp, d_dw, d_db = dev(dinp), dev(dw), None if db is None else dev(db)
        K.matmul_backward(dinp, dw, db, dout, inp, w, B, T, C, OC, overwrite)
        G.matmul_backward(d_dinp, d_dw, d_db, dev(dout), dev(inp), dev(w), B, T, C, OC, overwrite)
        tol = 1e-5 * max(C, OC, B * T, 4)
        close(d_dinp, dinp, tol, "dinp")
        close(d_dw, dw, tol, "dweight")
        if bias:
            close(d_db, db, tol, "dbias")

    @pytest.mark.parametrize("R,C,OC,bias", [(1, 7, 11, True), (3, 8, 5, False), (9, 5, 6, True)])
    def test_linear_of_the_decoding_path(R, C, OC, bias):
        # matrix-vector products below GEMM_MIN_ROWS rows, the tiled gemm from it on
        x, w, b = rand(R, C), rand(OC, C), rand(OC) if bias else None
        out = np.zeros(R * OC, F32)
        K.matmul_forward(out, x, w, b, 1, R, C, OC)
        d_out = cuda.device_array(R * OC, F32)
        G.linear(d_out, dev(x), dev(w), None if b is None else dev(b), R, C, OC)
        close(d_out, out, 1e-5 * max(C, 4), "linear")

    @pytest.mark.parametrize("transa", [False, True])
    @pytest.mark.parametrize("transb", [False, True])
    def test_gemm_offsets_strides_and_beta(transa, transb):
        # a (5,6) block at offset 3, row stride 9, of larger arrays; C += 0.5 op(A) op(B) into a sub-block
        m, n, k = 5, 10, 6
        A = RNG.standard_normal((k, m) if transa else (m, k)).astype(F32)
        Bm = RNG.standard_normal((n, k) if transb else (k, n)).astype(F32)
        a = np.zeros(3 + A.shape[0] * 9, F32)
        a[3:].reshape(A.shape[0], 9)[:, :A.shape[1]] = A
        b = np.zeros(Bm.size + 2, F32)
        b[2:] = Bm.ravel()
        c = rand(m, 12)
        want = c.reshape(m, 12).copy()
        want[:, 1:1 + n] += 0.5 * (A.T if transa else A) @ (Bm.T if transb else Bm)
        d_c = dev(c)
        G.gemm(transa, transb, m, n, k, 0.5, dev(a), 3, 9, dev(b), 2, Bm.shape[1], 1.0, d_c, 1, 12)
        close(d_c, want.ravel(), 1e-5, "gemm")

    @pytest.mark.parametrize("B,T,C,NH", [(2, 5, 8, 2), (1, 7, 6, 3)])
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_attention(B, T, C, NH, overwrite):
        inp, dout = rand(B, T, 3 * C), rand(B, T, C)
        out, att = np.zeros(B * T * C, F32), np.zeros(B * NH * T * T, F32)
        K.attention_forward(out, att, inp, B, T, C, NH)
        d_out, d_att = (cuda.device_array(n, F32) for n in (B * T * C, B * NH * T * T))
        d_inp = dev(inp)
        G.attention_forward(d_out, d_att, d_inp, B, T, C, NH)
        close(d_out, out, 2e-5, "att out")
        close(d_att, att, 2e-5, "att")
        dinp = rand(B, T, 3 * C)
        d_dinp, d_dpre = dev(dinp), cuda.device_array(B * NH * T * T, F32)
        K.attention_backward(dinp, dout, inp, att, B, T, C, NH, overwrite)
        G.attention_backward(d_dinp, d_dpre, dev(dout), d_inp, dev(att), B, T, C, NH, overwrite)
        close(d_dinp, dinp, 1e-4, "att dinp")
        # the CUDA kernel's scratch dS, which its keys' pass reads, against NumPy's (the CPU kernel keeps none)
        dscores = np_attention_dscores(inp, att.reshape(B, NH, T, T), dout, B, T, C, NH)
        close(d_dpre, dscores.ravel(), 1e-4, "dpreatt (dS)")

    @pytest.mark.parametrize("overwrite", [False, True])
    def test_gelu_and_residual(overwrite):
        N = 37
        x, y, dout = rand(N, scale=3.0), rand(N), rand(N)
        out = np.zeros(N, F32)
        K.gelu_forward(out, x, N)
        d_out = cuda.device_array(N, F32)
        G.gelu_forward(d_out, dev(x), N)
        close(d_out, out, 2e-5, "gelu")
        dx = rand(N)
        d_dx = dev(dx)
        K.gelu_backward(dx, x, dout, N, overwrite)
        G.gelu_backward(d_dx, dev(x), dev(dout), N, overwrite)
        close(d_dx, dx, 2e-5, "gelu backward")
        K.residual_forward(out, x, y, N)
        G.residual_forward(d_out, dev(x), dev(y), N)
        close(d_out, out, 0, "residual")

    @pytest.mark.parametrize("overwrite", [False, True])
    def test_softmax_crossentropy(overwrite):
        B, T, V, Vp = 2, 5, 11, 13
        logits = rand(B, T, Vp, scale=4.0)
        targets = RNG.integers(0, V, B * T).astype(np.int32)
        probs, losses = np.zeros(B * T * Vp, F32), np.zeros(B * T, F32)
        K.softmax_forward(probs, logits, B, T, V, Vp)
        K.crossentropy_forward(losses, probs, targets, B, T, Vp)
        d_probs, d_losses = dev(np.full(B * T * Vp, np.nan, F32)), cuda.device_array(B * T, F32)
        d_t = dev(targets)
        G.softmax_forward(d_probs, dev(logits), B, T, V, Vp)
        G.crossentropy_forward(d_losses, d_probs, d_t, B, T, Vp)
        close(d_probs, probs, 2e-5, "probs")  # the padded columns are 0 in both
        close(d_losses, losses, 2e-5, "losses")
        dlosses = rand(B, T)
        dlogits = np.full(B * T * Vp, np.nan if overwrite else 0.5, F32)
        d_dlogits = dev(dlogits)
        K.crossentropy_softmax_backward(dlogits, dlosses, probs, targets, B, T, V, Vp, overwrite)
        G.crossentropy_softmax_backward(d_dlogits, dev(dlosses), dev(probs), d_t, B, T, V, Vp, overwrite)
        close(d_dlogits, dlogits, 1e-6, "dlogits")
        if overwrite:  # the model's form: the probabilities become the logits' gradient in place
            G.crossentropy_softmax_backward_inplace(d_probs, dev(dlosses), d_t, B, T, V, Vp)
            close(d_probs, dlogits, 1e-6, "dlogits in place")

    def test_adamw_and_grad_norm():
        N = 37
        p, g, m, v = rand(N), rand(N), rand(N, scale=0.1), np.abs(rand(N, scale=0.1))
        dp, dg, dm, dv = dev(p), dev(g), dev(m), dev(v)
        K.adamw_update(p, g, m, v, 3e-3, 0.9, 0.999, 1e-8, 0.1, 3)
        G.adamw_update(dp, dg, dm, dv, 3e-3, 0.9, 0.999, 1e-8, 0.1, 3)
        for got, want, name in ((dp, p, "params"), (dm, m, "m"), (dv, v, "v")):
            close(got, want, 1e-6, name)
        out = cuda.device_array(1, np.float64)
        G.grad_norm_squared(out, dg, cuda.device_array(G.NORM_BLOCKS, np.float64))
        assert out.copy_to_host()[0] == pytest.approx(K.grad_norm_squared(g), rel=1e-12)
        G.scale_inplace(dg, 0.25)
        G.fill_inplace(dp, 2.0)
        close(dg, g * F32(0.25), 0, "scale")
        close(dp, np.full(N, 2.0, F32), 0, "fill")

    CONFIG = ModelConfig(vocab_size=11, max_seq_len=6, num_layers=2, num_heads=2, embed_dim=8, padded_vocab_size=13)

    def test_two_training_steps_equal_the_cpu():
        rng = np.random.default_rng(5)
        batches = [(rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))) for _ in range(2)]
        cpu, gpu = Model(CONFIG, seed=3), to_device(Model(CONFIG, seed=3), "cuda")
        assert isinstance(gpu, CudaModel)
        opt_c, opt_g = (cls(lr=1e-2, weight_decay=0.1, grad_clip=1.0) for cls in (AdamW, CudaAdamW))
        for x, y in batches:
            losses, norms = [], []
            for model, opt in ((cpu, opt_c), (gpu, opt_g)):
                model.zero_grad()
                _, loss = model.forward(x, y)
                model.backward()
                losses.append(loss)
                norms.append(opt.step(model, loss=loss))
            assert losses[1] == pytest.approx(losses[0], abs=1e-5)
            assert norms[1] == pytest.approx(norms[0], rel=1e-5)
        for name, got, want in (("params", gpu.params_to_host(), cpu.params), ("grads", gpu.grads_to_host(), cpu.grads),
                                *zip(("m", "v"), gpu.moments_to_host(), cpu.moments_to_host())):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=name)
        host = gpu.to_host()  # and back: the same numbers, so a run moves between devices
        np.testing.assert_array_equal(host.params, gpu.params_to_host())
        logits = gpu.forward(batches[0][0])
        np.testing.assert_allclose(logits, cpu.forward(batches[0][0]), rtol=0, atol=1e-5)

    def test_kv_cache_decode_equals_the_forward():
        cpu = Model(CONFIG, seed=4)
        gpu = to_device(cpu, "cuda")
        seq = np.array([3, 1, 4, 1, 5, 9], dtype=np.int32)
        full = gpu.forward(seq[None, :])[0]  # (T, V): position t's logits
        np.testing.assert_allclose(full, cpu.forward(seq[None, :])[0], rtol=0, atol=1e-5)
        cache = gpu.new_kv_cache(1)
        np.testing.assert_allclose(gpu.prefill(seq[:3], 0, cache), full[2], rtol=0, atol=1e-5)
        for t in range(3, 6):
            np.testing.assert_allclose(gpu.decode_step(seq[t:t + 1], t, cache)[0], full[t], rtol=0, atol=1e-5)
        # a prompt of GEMM_MIN_ROWS or more tokens: prefill's linear layers are the tiled gemm
        long = Model(ModelConfig(vocab_size=11, max_seq_len=10, num_layers=1, num_heads=2, embed_dim=8), seed=2)
        long_gpu = to_device(long, "cuda")
        ids = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.int32)
        np.testing.assert_allclose(long_gpu.prefill(ids, 0, long_gpu.new_kv_cache(1)), long.forward(ids[None])[0, -1],
                                   rtol=0, atol=1e-5)
        # two sequences decoded together, token by token
        seqs = np.stack([seq, seq[::-1]])
        want = gpu.forward(seqs)
        cache2 = gpu.new_kv_cache(2)
        for t in range(6):
            np.testing.assert_allclose(gpu.decode_step(seqs[:, t], t, cache2), want[:, t], rtol=0, atol=1e-5)

    def test_generator_and_beam_search_match_the_cpu():
        from cllm.generation import Generator, SamplingConfig

        small = ModelConfig(vocab_size=11, max_seq_len=4, num_layers=1, num_heads=2, embed_dim=8,
                            padded_vocab_size=13)
        cpu = Model(small, seed=6)
        gpu = to_device(cpu, "cuda")
        cfg = SamplingConfig(max_new_tokens=4, temperature=0.0)  # greedy; runs past the context (a refill)
        assert list(Generator(gpu).stream([1, 2], cfg)) == list(Generator(cpu).stream([1, 2], cfg))
        # beams reorder their caches on the device (DeviceCache's gather)
        beams_g = Generator(gpu, eos_id=0).beam_search([1], 3, 2)
        beams_c = Generator(cpu, eos_id=0).beam_search([1], 3, 2)
        assert [b[0] for b in beams_g] == [b[0] for b in beams_c]
        np.testing.assert_allclose([b[1] for b in beams_g], [b[1] for b in beams_c], rtol=1e-5)

    def test_checkpoint_written_on_cuda_is_the_cpu_file(tmp_path):
        from safetensors import safe_open

        from cllm import checkpoint as ck

        gpu = to_device(Model(CONFIG, seed=8), "cuda")
        opt = CudaAdamW(lr=1e-2)
        gpu.zero_grad()
        gpu.forward(np.arange(10).reshape(2, 5) % 11, np.arange(1, 11).reshape(2, 5) % 11)
        gpu.backward()
        opt.step(gpu)
        ck.save_checkpoint(str(tmp_path), "gpu", gpu, opt)
        ck.save_checkpoint(str(tmp_path), "cpu", gpu.to_host(), opt)
        # the same tensors, bit for bit, and metadata (safetensors writes the metadata keys in no fixed
        # order, so two saves of one CPU model already differ as byte strings)
        for name in (ck.MODEL_FILE, ck.OPTIMIZER_FILE):
            with safe_open(str(tmp_path / "gpu" / name), "np") as a, safe_open(str(tmp_path / "cpu" / name), "np") as b:
                assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
                for key in a.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
                    np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)
        loaded = ck.model_from_checkpoint(ck.load_checkpoint(str(tmp_path / "gpu"), with_optimizer=True))
        np.testing.assert_array_equal(loaded.params, gpu.params_to_host())  # resumes on the CPU bit for bit
        np.testing.assert_array_equal(to_device(loaded, "cuda").moments_to_host()[1], gpu.moments_to_host()[1])

    def _cli(capsys, *args):
        sys.path.insert(0, ROOT)
        from cllm import cli

        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        out = capsys.readouterr()
        assert code == 0, out.err[-2000:]
        return out.out

    def test_cli_train_generate_evaluate_on_cuda_equal_the_cpu(tmp_path, capsys):
        import json

        text = tmp_path / "text.txt"
        text.write_text("the quick brown fox jumps over the lazy dog. " * 14)  # 63 validation tokens
        flags = ["--num-layers", 1, "--num-heads", 2, "--embed-dim", 8, "--seq-len", 8, "--batch-size", 2,
                 "--max-steps", 2, "--sample-interval", 1000, "--no-progress", "--seed", 7]
        runs = {}
        for device in ("cpu", "cuda"):
            ckdir = tmp_path / device
            _cli(capsys, "train", text, *flags, "--checkpoint-dir", ckdir, "--device", device)
            metrics = [json.loads(line) for line in (ckdir / "metrics.jsonl").read_text().splitlines()]
            gen = _cli(capsys, "generate", "the ", "--checkpoint", ckdir, "--temperature", 0, "--max-new-tokens", 4,
                       "--device", device)
            ev = json.loads(_cli(capsys, "evaluate", ckdir, "--text", "the lazy dog jumps over the quick fox",
                                 "--json", "--no-progress", "--device", device))
            runs[device] = (metrics, gen, ev)
        (mc, gc, ec), (mg, gg, eg) = runs["cpu"], runs["cuda"]
        for a, b in zip(mc, mg):
            for key in ("train_loss", "val_loss", "grad_norm"):
                if key in a:
                    assert b[key] == pytest.approx(a[key], abs=1e-5), key
        assert gg == gc
        assert eg["loss"] == pytest.approx(ec["loss"], abs=1e-5)
        # the run saved on the GPU resumes on the CPU (and the CPU's on the GPU)
        _cli(capsys, "train", "--resume", "latest", "--checkpoint-dir", tmp_path / "cuda", "--max-steps", 3,
             "--no-progress", "--device", "cpu")
        _cli(capsys, "train", "--resume", "latest", "--checkpoint-dir", tmp_path / "cpu", "--max-steps", 3,
             "--no-progress", "--device", "cuda")
        last = [[r for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
                 if "train_loss" in r][-1] for d in ("cpu", "cuda")]
        assert last[0]["step"] == last[1]["step"] == 3
        assert last[0]["train_loss"] == pytest.approx(last[1]["train_loss"], abs=1e-5)
