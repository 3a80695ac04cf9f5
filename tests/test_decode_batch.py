"""Model.decode_batch (cllm/model.py, cllm/kernels/decode.py): one step of B sequences, each at its own position
in its own slot of a shared cache, gives the logits of B separate decode_step runs (gpt2 and llama with GQA,
float32 and int8, fewer and more rows than the gemm threshold), and bad input is refused. CudaModel's batched
step (cllm/device.py, cllm/kernels/cuda/decode.py) runs in Numba's CUDA simulator, in a child process as
tests/test_cuda_sim.py does (tests/cuda_sim_helpers.py), against the CPU's."""
import numpy as np
import pytest
from cuda_sim_helpers import SIMULATED, patch_simulator, run_in_simulator

from cllm.config import ModelConfig
from cllm.errors import ConfigError
from cllm.kernels.decode import GEMM_MIN_ROWS, INT8_GEMM_MIN_ROWS
from cllm.model import Model
from cllm.model_interface import LanguageModel
from cllm.quantize import Int8Model

GPT2 = dict(vocab_size=29, max_seq_len=24, num_layers=2, num_heads=4, embed_dim=32)
LLAMA = dict(arch="llama", vocab_size=29, max_seq_len=24, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
             ffn_dim=40)


def roughened(cfg: ModelConfig) -> Model:
    """Gains and biases away from 1 and 0, so that every weight matters."""
    model = Model(cfg, seed=1)
    model.params += np.random.default_rng(1).normal(0, 0.05, model.params.size).astype(np.float32)
    return model


def check_batch_equals_steps(model, B: int, steps: int = 3, seed: int = 0) -> None:
    """B prompts of different lengths in slots permuted over a cache of B + 1 sequences; `steps` batched steps
    against decode_step on a cache of its own per sequence."""
    rng = np.random.default_rng(seed)
    V, n = model.config.vocab_size, model.config.kv_cache_size(1)
    lengths = [1 + (3 * b) % 9 for b in range(B)]  # 1 .. 9 tokens: every sequence at its own position
    prompts = [rng.integers(0, V, size=k).astype(np.int32) for k in lengths]
    slots = rng.permutation(B + 1)[:B]
    shared = model.new_kv_cache(B + 1)
    alone = [model.new_kv_cache(1) for _ in range(B)]
    for b, prompt in enumerate(prompts):
        model.prefill(prompt, 0, shared[slots[b] * n:(slots[b] + 1) * n])
        model.prefill(prompt, 0, alone[b])
    positions = np.array(lengths)
    for _ in range(steps):
        tokens = rng.integers(0, V, size=B).astype(np.int32)
        got = model.decode_batch(tokens, positions, shared, slots)
        want = np.stack([model.decode_step(tokens[b:b + 1], int(positions[b]), alone[b])[0] for b in range(B)])
        assert got.shape == (B, V)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        positions += 1


@pytest.mark.parametrize("arch", [GPT2, LLAMA], ids=["gpt2", "llama"])
@pytest.mark.parametrize("B", [3, GEMM_MIN_ROWS + 1])
def test_decode_batch_equals_separate_decode_steps(arch, B):
    check_batch_equals_steps(roughened(ModelConfig(**arch)), B)


@pytest.mark.parametrize("arch", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_int8_decode_batch_equals_its_decode_steps(arch):
    check_batch_equals_steps(Int8Model(roughened(ModelConfig(**arch))), INT8_GEMM_MIN_ROWS + 1)


def test_llama_options_batch_too():
    cfg = ModelConfig(**LLAMA, qk_norm=True, activation="relu2", logit_softcap=15.0, tie_embeddings=False)
    check_batch_equals_steps(roughened(cfg), 4)


def test_the_interface_default_runs_one_at_a_time():
    # what an implementation without its own batched step (LanguageModel.decode_batch) gives: the same logits
    model = roughened(ModelConfig(**GPT2))
    model.decode_batch = lambda *a: LanguageModel.decode_batch(model, *a)
    check_batch_equals_steps(model, 3)


def test_bad_input_is_refused():
    model = Model(ModelConfig(**GPT2), seed=0)
    cache = model.new_kv_cache(2)
    for args, match in [(([1, 2], [0], cache), "one position"), (([1, 2], [0, 24], cache), "outside"),
                        (([1, 2], [0, 1], cache, [0, 0]), "distinct"), (([1, 2], [0, 1], cache, [0, 2]), "distinct"),
                        (([1, 2], [0, 1], cache[:-1]), "whole sequences"), (([1, 29], [0, 1], cache), "token ids")]:
        with pytest.raises(ConfigError, match=match):
            model.decode_batch(*args)


if not SIMULATED:
    def test_cuda_decode_batch_in_the_simulator():
        run_in_simulator(__file__, "-k", "on_the_device")
else:
    patch_simulator()

    @pytest.mark.parametrize("arch", ["gpt2", "llama"])
    def test_decode_batch_on_the_device_equals_the_cpus(arch):
        from numba import cuda

        from cllm.device import DeviceCache, to_device

        sizes = dict(vocab_size=13, max_seq_len=8, num_layers=1, num_heads=2, embed_dim=8)
        if arch == "llama":
            sizes.update(arch="llama", num_kv_heads=1, ffn_dim=12)
        cpu = roughened(ModelConfig(**sizes))
        gpu = to_device(cpu, "cuda")
        n, rng = cpu.config.kv_cache_size(1), np.random.default_rng(0)
        host = cpu.new_kv_cache(4)
        slots, positions = np.array([2, 0, 3]), np.array([1, 4, 2])
        for slot, k in zip(slots, positions):  # prompts of different lengths in three of four slots
            cpu.prefill(rng.integers(0, 13, size=k).astype(np.int32), 0, host[slot * n:(slot + 1) * n])
        device = DeviceCache(cuda.to_device(host))
        for _ in range(2):  # two steps: the second attends over the first's keys
            tokens = rng.integers(0, 13, size=3).astype(np.int32)
            np.testing.assert_allclose(gpu.decode_batch(tokens, positions, device, slots),
                                       cpu.decode_batch(tokens, positions, host, slots), rtol=0, atol=1e-5)
            positions += 1
        np.testing.assert_allclose(device.array.copy_to_host(), host, rtol=0, atol=1e-5)
