"""SwiGLU, out = silu(gate) * up, as cllm/kernels/swiglu.py.

Legend: N rows (B*T), F hidden units. inp (N,2F) holds per row the gate (first F) then the up projection.
One thread per output element, in a grid-stride loop. exp's argument -g is clamped to [-87, 88], as on
the CPU (the sigmoid changes by under 1e-37; the simulator's math.exp would raise on an overflow).
"""
import math

from numba import cuda

from ._common import F32, THREADS, blocks


@cuda.jit(device=True, inline=True)
def _sigmoid(g):
    return F32(1) / (F32(1) + math.exp(min(max(-g, F32(-87)), F32(88))))


@cuda.jit
def _swiglu_forward(out, inp, N, F):
    for e in range(cuda.grid(1), N * F, cuda.gridsize(1)):
        o = (e // F) * 2 * F + e % F  # this row's gate; its up is F further
        g = inp[o]
        out[e] = g * _sigmoid(g) * inp[o + F]


def swiglu_forward(out, inp, N, F):
    # out (N,F) = silu(inp[:, :F]) * inp[:, F:];  inp (N,2F)
    _swiglu_forward[blocks(N * F), THREADS](out, inp, N, F)


@cuda.jit
def _swiglu_backward(dinp, dout, inp, N, F, overwrite):
    for e in range(cuda.grid(1), N * F, cuda.gridsize(1)):
        o = (e // F) * 2 * F + e % F
        g = inp[o]
        u = inp[o + F]
        s = _sigmoid(g)
        dy = dout[e]
        vg = dy * u * s * (F32(1) + g * (F32(1) - s))  # silu'(g) = s (1 + g (1 - s))
        vu = dy * g * s
        dinp[o] = vg if overwrite else dinp[o] + vg
        dinp[o + F] = vu if overwrite else dinp[o + F] + vu


def swiglu_backward(dinp, dout, inp, N, F, overwrite=False):
    # dinp (N,2F) += [dout * u * silu'(g), dout * silu(g)] (= with overwrite);  dout (N,F);  inp (N,2F)
    _swiglu_backward[blocks(N * F), THREADS](dinp, dout, inp, N, F, overwrite)
