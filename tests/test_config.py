"""Every impossible model configuration is refused with one clear ConfigError, never a crash."""
import re

import numpy as np
import pytest

from cllm import config as config_module
from cllm.config import ModelConfig, available_memory_bytes, padded_vocab_size
from cllm.errors import CLLMError, ConfigError
from cllm.model import Model


def test_defaults_valid_and_padded():
    cfg = ModelConfig()
    assert cfg.padded_vocab_size == 128 and cfg.padded_vocab_size % 64 == 0
    assert padded_vocab_size(64) == 64 and padded_vocab_size(65) == 128 and padded_vocab_size(50257) == 50304
    assert ModelConfig(vocab_size=5000).padded_vocab_size == 5056
    assert issubclass(ConfigError, CLLMError)


@pytest.mark.parametrize("field", ["vocab_size", "max_seq_len", "num_layers", "num_heads", "embed_dim"])
@pytest.mark.parametrize("value", [0, -3, 2.5, "8", True, None])
def test_non_positive_or_non_integer_sizes(field, value):
    kwargs = dict(vocab_size=65, max_seq_len=64, num_layers=2, num_heads=2, embed_dim=8)
    kwargs[field] = value
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**kwargs)


def test_heads_must_divide_embed_dim():
    with pytest.raises(ConfigError) as e:
        ModelConfig(embed_dim=100, num_heads=8)
    msg = str(e.value)
    assert "embed_dim (100)" in msg and "num_heads (8)" in msg
    suggested = int(re.search(r"--num-heads (\d+)", msg).group(1))
    assert 100 % suggested == 0  # the suggested fix is itself a valid config
    ModelConfig(embed_dim=100, num_heads=suggested)


def test_padded_vocab_smaller_than_vocab():
    with pytest.raises(ConfigError, match="padded_vocab_size"):
        ModelConfig(vocab_size=100, padded_vocab_size=64)


def test_seq_len_beyond_max_seq_len():
    cfg = ModelConfig(vocab_size=11, max_seq_len=8, num_layers=1, num_heads=1, embed_dim=4)
    with pytest.raises(ConfigError, match=r"seq_len \(9\) exceeds the model's max_seq_len \(8\)"):
        cfg.check_batch(2, 9)
    m = Model(cfg, seed=0)
    with pytest.raises(ConfigError, match="max_seq_len"):
        m.forward(np.zeros((1, 9), np.int32))
    for B, T in ((0, 4), (2, 0), (-1, 4)):
        with pytest.raises(ConfigError, match="positive"):
            cfg.check_batch(B, T)


def test_bad_token_ids():
    cfg = ModelConfig(vocab_size=11, max_seq_len=8, num_layers=1, num_heads=1, embed_dim=4)
    m = Model(cfg, seed=0)
    with pytest.raises(ConfigError, match="outside"):
        m.forward(np.array([[1, 11]]))
    with pytest.raises(ConfigError, match="outside"):  # -1 is a target with no loss; -2 is nothing
        m.forward(np.array([[1, 2]]), np.array([[-2, 2]]))
    with pytest.raises(ConfigError, match="shape"):
        m.forward(np.array([[1, 2]]), np.array([[1, 2, 3]]))


def _assert_memory_message(msg: str, need: int, cfg) -> None:
    m = re.search(r"needs about ([\d.]+) GiB", msg)
    assert m and float(m.group(1)) == pytest.approx(need / 2**30, abs=0.06)
    assert f"{cfg.num_parameters():,} parameters" in msg
    assert re.search(r"only [\d.]+ GiB of memory is available", msg)
    assert "reduce" in msg


def test_config_too_big_for_memory_is_refused_before_allocation():
    # a vocabulary whose embedding alone needs twice the memory here
    have = available_memory_bytes()
    assert have is not None
    C = 4096
    cfg = ModelConfig(vocab_size=2 * have // (4 * C) + 1, max_seq_len=1024, num_layers=2, num_heads=32, embed_dim=C)
    need = cfg.memory_bytes(0, 0, training=False)
    assert need > have and need >= cfg.num_parameters() * 4  # the parameters in float32
    with pytest.raises(ConfigError) as e:
        Model(cfg, seed=0)
    _assert_memory_message(str(e.value), need, cfg)


def test_training_buffers_too_big_are_refused_at_first_use():
    """Parameters that fit, but not with their gradients and AdamW moments: the model loads (to
    generate), and the first use of a training buffer is refused before any is allocated."""
    have = available_memory_bytes()
    C = 4096
    cfg = ModelConfig(vocab_size=have // (3 * 4 * C), max_seq_len=1024, num_layers=2, num_heads=32, embed_dim=C)
    assert cfg.memory_bytes(0, 0, training=False) < have < cfg.memory_bytes(0, 0, training=True)
    model = Model(cfg, seed=None)  # parameters allocated, never touched (no initialization)
    with pytest.raises(ConfigError) as e:
        model.grads
    _assert_memory_message(str(e.value), cfg.memory_bytes(0, 0, training=True), cfg)
    assert not model.has_training_buffers()


def test_batch_too_big_for_memory(monkeypatch):
    cfg = ModelConfig(vocab_size=65, max_seq_len=1024, num_layers=4, num_heads=4, embed_dim=128)
    need = cfg.memory_bytes(64, 1024)
    # pretend the machine has a bit less than the batch needs, but plenty for the model itself
    monkeypatch.setattr(config_module, "available_memory_bytes", lambda: need - 1)
    Model(cfg, seed=0)
    with pytest.raises(ConfigError, match=r"batch 64 x 1024.*only [\d.]+ GiB"):
        cfg.check_batch(64, 1024)
    cfg.check_batch(1, 1024)


def test_memory_estimate_counts_every_buffer():
    cfg = ModelConfig(vocab_size=65, max_seq_len=64, num_layers=2, num_heads=2, embed_dim=16)
    P = cfg.num_parameters()
    m = Model(cfg, seed=0)
    assert P == m.params.size
    m.forward(np.zeros((3, 10), np.int32), np.zeros((3, 10), np.int32))
    A = m.acts.size
    assert A == cfg.num_activations(3, 10)
    m.backward()
    G = m.grad_acts.size
    assert G == cfg.num_grad_activations(3, 10)
    allocated = 4 * (4 * P + A + G)
    assert allocated <= cfg.memory_bytes(3, 10) <= 1.2 * allocated


def test_activation_gradients_are_one_layers_worth():
    """Every layer's backward reuses one layer's activation-gradient buffers (cllm/config.py's
    grad_activation_shapes): their size does not grow with the number of layers."""
    sizes = {}
    for L in (1, 3):
        cfg = ModelConfig(vocab_size=65, max_seq_len=16, num_layers=L, num_heads=2, embed_dim=16)
        m = Model(cfg, seed=0)
        m.forward(np.zeros((2, 8), np.int32), np.zeros((2, 8), np.int32))
        m.backward()
        sizes[L] = (m.acts.size, m.grad_acts.size)
    assert sizes[3][0] > sizes[1][0]  # the saved activations grow with the layers
    assert sizes[3][1] == sizes[1][1]  # their gradients do not


def test_round_trip_and_unknown_fields():
    cfg = ModelConfig(vocab_size=70, max_seq_len=32, num_layers=1, num_heads=2, embed_dim=8)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_embd": 8})


def test_the_llama_architecture_resolves_its_defaults_and_counts_smollm2():
    """SmolLM2-135M's sizes (30 layers, 576 wide, 9 heads over 3 kv heads, ffn 1536, 49,152 ids, tied) give its
    published 134.5M parameters; the 0 placeholders resolve per architecture."""
    smol = ModelConfig(arch="llama", vocab_size=49152, max_seq_len=2048, num_layers=30, num_heads=9, embed_dim=576,
                       num_kv_heads=3, ffn_dim=1536)
    assert smol.num_parameters() == 134_515_008
    assert smol.qkv_dim == (9 + 2 * 3) * 64
    assert ModelConfig(arch="llama", embed_dim=128).ffn_dim == 384  # 8C/3 = 341, up to a multiple of 64
    assert ModelConfig(arch="llama").num_kv_heads == ModelConfig().num_heads
    untied = ModelConfig(arch="llama", tie_embeddings=False, attention_bias=True)
    assert untied.param_shapes()["lm_head"] == (untied.padded_vocab_size, untied.embed_dim)
    assert untied.param_shapes()["qkvb"] == (untied.num_layers, untied.qkv_dim)
    gpt2 = ModelConfig()
    assert (gpt2.num_kv_heads, gpt2.ffn_dim) == (gpt2.num_heads, 4 * gpt2.embed_dim)
    assert ModelConfig.from_dict(gpt2.to_dict()) == gpt2


@pytest.mark.parametrize("fields, message", [
    ({"arch": "mamba"}, "unknown architecture"),
    ({"num_kv_heads": 2}, "use --arch llama"),
    ({"tie_embeddings": False}, "no-tie-embeddings"),
    ({"arch": "llama", "num_heads": 4, "num_kv_heads": 3}, "multiple of num_kv_heads"),
    ({"arch": "llama", "embed_dim": 12, "num_heads": 4}, "must be even"),
    ({"arch": "llama", "rope_theta": 0.5}, "rope_theta"),
    ({"arch": "llama", "ffn_dim": -1}, "non-negative"),
    ({"norm_eps": 0}, "norm_eps"),
])
def test_impossible_architectures_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)
