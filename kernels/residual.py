"""Residual connection: out = inp1 + inp2.

Legend: N element count.
"""
from numba import njit, prange

from ._common import PJIT


@njit(**PJIT)
def residual_forward(out, inp1, inp2, N):
    # out (N) = inp1 (N) + inp2 (N)
    for i in prange(N):
        out[i] = inp1[i] + inp2[i]


@njit(**PJIT)
def residual_backward(dinp1, dinp2, dout, N):
    # dinp1, dinp2 (N) += dout (N)
    for i in prange(N):
        dinp1[i] += dout[i]
        dinp2[i] += dout[i]
