"""GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

Legend: N element count.
"""
import numpy as np
from numba import njit, prange

from ._common import PJIT

GELU_SCALE = np.sqrt(2.0 / np.pi)


@njit(**PJIT)
def gelu_forward(out, inp, N):
    # out (N) = gelu(inp (N))
    s = inp.dtype.type(GELU_SCALE)
    k = inp.dtype.type(0.044715)
    half = inp.dtype.type(0.5)
    one = inp.dtype.type(1)
    for i in prange(N):
        x = inp[i]
        out[i] = half * x * (one + np.tanh(s * (x + k * x * x * x)))


@njit(**PJIT)
def gelu_backward(dinp, inp, dout, N):
    # dinp (N) += gelu'(inp) * dout
    s = inp.dtype.type(GELU_SCALE)
    k = inp.dtype.type(0.044715)
    k3 = inp.dtype.type(3.0 * 0.044715)
    half = inp.dtype.type(0.5)
    one = inp.dtype.type(1)
    for i in prange(N):
        x = inp[i]
        u = s * (x + k * x * x * x)
        th = np.tanh(u)
        sech2 = one - th * th
        local = half * (one + th) + x * half * sech2 * s * (one + k3 * x * x)
        dinp[i] += local * dout[i]
