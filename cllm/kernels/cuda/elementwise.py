"""Elementwise kernels: token + position embedding, GELU, residual, and the buffer helpers.

Legend: B batch, T time, C channels, Vp padded vocab, maxT positions, N element count.
One thread per element, in a grid-stride loop (any grid covers any N).
"""
import math

from numba import cuda

from ._common import F32, THREADS, blocks

GELU_SCALE = math.sqrt(2.0 / math.pi)


@cuda.jit
def _encoder_forward(out, inp, wte, wpe, BT, T, C):
    for i in range(cuda.grid(1), BT * C, cuda.gridsize(1)):
        bt = i // C
        c = i % C
        out[i] = wte[inp[bt] * C + c] + wpe[(bt % T) * C + c]


@cuda.jit
def _embedding_forward(out, inp, wte, BT, C):
    for i in range(cuda.grid(1), BT * C, cuda.gridsize(1)):
        out[i] = wte[inp[i // C] * C + i % C]


def encoder_forward(out, inp, wte, wpe, B, T, C):
    # out (B,T,C) = wte[inp[b,t]] + wpe[t];  inp (B,T) int32;  wte (Vp,C);  wpe (maxT,C), or None (llama:
    # token embeddings alone)
    if wpe is None:
        _embedding_forward[blocks(B * T * C), THREADS](out, inp, wte, B * T, C)
        return
    _encoder_forward[blocks(B * T * C), THREADS](out, inp, wte, wpe, B * T, T, C)


@cuda.jit
def _encoder_backward_wte(dwte, dout, inp, BT, C):
    # one thread per channel c, adding the rows in order: two positions holding the same token
    # write the same dwte row, and this order (the CPU kernel's) makes the sums deterministic
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        for bt in range(BT):
            dwte[inp[bt] * C + c] += dout[bt * C + c]


@cuda.jit
def _encoder_backward_wpe(dwpe, dout, B, T, C):
    # one thread per (position, channel), over the batch in order
    for e in range(cuda.grid(1), T * C, cuda.gridsize(1)):
        acc = dwpe[e]
        for b in range(B):
            acc += dout[b * T * C + e]
        dwpe[e] = acc


def encoder_backward(dwte, dwpe, dout, inp, B, T, C):
    # dwte (Vp,C) += dout rows at the token ids;  dwpe (maxT,C) += dout summed over the batch (dwpe None: skipped)
    _encoder_backward_wte[blocks(C), THREADS](dwte, dout, inp, B * T, C)
    if dwpe is None:
        return
    _encoder_backward_wpe[blocks(T * C), THREADS](dwpe, dout, B, T, C)


@cuda.jit(device=True, inline=True)
def gelu(x):
    return F32(0.5) * x * (F32(1) + math.tanh(F32(GELU_SCALE) * (x + F32(0.044715) * x * x * x)))


@cuda.jit
def _gelu_forward(out, inp, N):
    for i in range(cuda.grid(1), N, cuda.gridsize(1)):
        out[i] = gelu(inp[i])


def gelu_forward(out, inp, N):
    # out (N) = gelu(inp (N)), tanh approximation (GPT-2's); out may be inp
    _gelu_forward[blocks(N), THREADS](out, inp, N)


@cuda.jit
def _gelu_backward(dinp, inp, dout, N, overwrite):
    s = F32(GELU_SCALE)
    k = F32(0.044715)
    half = F32(0.5)
    one = F32(1)
    for i in range(cuda.grid(1), N, cuda.gridsize(1)):
        x = inp[i]
        th = math.tanh(s * (x + k * x * x * x))
        g = (half * (one + th) + x * half * (one - th * th) * s * (one + F32(3.0 * 0.044715) * x * x)) * dout[i]
        dinp[i] = g if overwrite else dinp[i] + g


def gelu_backward(dinp, inp, dout, N, overwrite=False):
    # dinp (N) += gelu'(inp) * dout  (= with overwrite)
    _gelu_backward[blocks(N), THREADS](dinp, inp, dout, N, overwrite)


@cuda.jit
def _residual_forward(out, inp1, inp2, N):
    for i in range(cuda.grid(1), N, cuda.gridsize(1)):
        out[i] = inp1[i] + inp2[i]


def residual_forward(out, inp1, inp2, N):
    # out (N) = inp1 (N) + inp2 (N); out may be either input
    _residual_forward[blocks(N), THREADS](out, inp1, inp2, N)


@cuda.jit
def _fill(x, value, N):
    for i in range(cuda.grid(1), N, cuda.gridsize(1)):
        x[i] = value


def fill_inplace(x, value):
    # x (N) = value
    _fill[blocks(x.size), THREADS](x, F32(value), x.size)


@cuda.jit
def _scale(x, s, N):
    for i in range(cuda.grid(1), N, cuda.gridsize(1)):
        x[i] *= s


def scale_inplace(x, s):
    # x (N) *= s
    _scale[blocks(x.size), THREADS](x, F32(s), x.size)
