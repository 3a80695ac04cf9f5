"""Parity with an independent GPT in PyTorch (float64), through a fixture made once by
tests/reference/make_reference.py: same weights, same batch; logits, loss, every gradient and the
losses of 10 AdamW steps (two parameter groups, global-norm clipping). torch is not imported here."""
import os

import numpy as np
import pytest

from cllm.config import ModelConfig
from cllm.model import Model
from cllm.optim import AdamW

FIXTURE = os.path.join(os.path.dirname(__file__), "reference", "gpt_reference.npz")
NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
         "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def make_model(ref, dtype):
    V, Vp, maxT, L, NH, C, _, _ = (int(x) for x in ref["sizes"])
    cfg = ModelConfig(vocab_size=V, max_seq_len=maxT, num_layers=L, num_heads=NH, embed_dim=C,
                      padded_vocab_size=Vp)
    m = Model(cfg, seed=None, dtype=dtype)
    assert m.params.size == ref["params"].size
    m.params[:] = ref["params"]
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_backward_match_pytorch(ref, dtype):
    m = make_model(ref, dtype)
    m.zero_grad()
    logits, loss = m.forward(ref["inputs"], ref["targets"])
    diff = np.max(np.abs(logits.astype(np.float64) - ref["logits"]))
    assert diff <= 1e-5, f"logits differ by {diff:g}"
    assert abs(loss - float(ref["loss"])) <= 1e-5
    m.backward()
    for name in NAMES:
        want = ref["grad_" + name]
        assert m.tensor(name).shape == want.shape
        got = m.g[name].reshape(want.shape).astype(np.float64)
        scale = np.max(np.abs(want))
        assert scale > 0, f"the reference gradient of {name} is all zero"
        err = np.max(np.abs(got - want))
        assert err <= 1e-4 * scale, f"gradient of {name}: max abs diff {err:g} vs max {scale:g}"
    if dtype == np.float64:  # float64 against float64: far tighter than the bound
        np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(m.grads, np.concatenate([ref["grad_" + n].ravel() for n in NAMES]),
                                   rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ten_adamw_steps_match_pytorch(ref, dtype):
    lr, beta1, beta2, eps, wd, clip, steps = ref["hyper"]
    m = make_model(ref, dtype)
    opt = AdamW(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd, grad_clip=clip)
    losses, norms = [], []
    for _ in range(int(steps)):
        m.zero_grad()
        _, loss = m.forward(ref["inputs"], ref["targets"])
        m.backward()
        norms.append(opt.step(m, loss=loss))
        losses.append(loss)
    clipped = ref["grad_norms"] > clip
    assert clipped.any() and not clipped.all(), "the fixture should exercise both sides of the clip"
    np.testing.assert_allclose(norms, ref["grad_norms"], rtol=1e-4)
    for i, (got, want) in enumerate(zip(losses, ref["losses"])):
        assert abs(got - want) <= 1e-5, f"loss of step {i}: {got} vs {want}"
    assert ref["losses"][-1] < ref["losses"][0] - 1  # the steps do train
    # final weights: the key biases excepted in float32. Their true gradient is 0 (a bias added to
    # every key shifts a query's scores by a constant, which the softmax ignores), so both
    # implementations see rounding noise there, and Adam's m/sqrt(v) turns the noise into +-lr steps.
    want = ref["final_params"]
    keep = np.ones(want.size, bool)
    if dtype == np.float32:
        off = sum(m.p[n].size for n in NAMES[:NAMES.index("qkvb")])
        C = m.config.embed_dim
        kb = keep[off:off + m.p["qkvb"].size].reshape(m.config.num_layers, 3 * C)
        kb[:, C:2 * C] = False
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(m.params[keep], want[keep], rtol=0, atol=tol * np.max(np.abs(want)))
