"""Token + position embedding.

Legend: B batch, T time, C channels, Vp padded vocab, maxT the model's maximum sequence length.
"""
from numba import njit, prange

from ._common import JIT, PJIT


@njit(**PJIT)
def encoder_forward(out, inp, wte, wpe, B, T, C):
    # out (B,T,C) = wte[inp[b,t]] + wpe[t];  inp (B,T) int32;  wte (Vp,C);  wpe (maxT,C)
    for bt in prange(B * T):
        t = bt % T
        ix = inp[bt]
        o = bt * C
        for c in range(C):
            out[o + c] = wte[ix * C + c] + wpe[t * C + c]


@njit(**JIT)
def encoder_backward(dwte, dwpe, dout, inp, B, T, C):
    # dwte (Vp,C) += dout rows at the token ids;  dwpe (maxT,C) += dout summed over the batch.
    # Serial on purpose: two positions holding the same token write the same dwte row.
    for bt in range(B * T):
        t = bt % T
        ix = inp[bt]
        o = bt * C
        for c in range(C):
            d = dout[o + c]
            dwte[ix * C + c] += d
            dwpe[t * C + c] += d
