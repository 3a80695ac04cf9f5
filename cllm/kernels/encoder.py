"""Token + position embedding (gpt2), or token embedding alone (llama: wpe None, its positions enter through RoPE).

Legend: B batch, T time, C channels, Vp padded vocab, maxT the model's maximum sequence length.
wpe / dwpe may be None: Numba compiles a version without the position terms (a None argument's
`is None` branch is pruned at compile time).
"""
from numba import njit, prange

from ._common import JIT, PJIT


@njit(**PJIT)
def encoder_forward(out, inp, wte, wpe, B, T, C):
    # out (B,T,C) = wte[inp[b,t]] + wpe[t];  inp (B,T) int32;  wte (Vp,C);  wpe (maxT,C) or None
    if wpe is None:
        for bt in prange(B * T):
            ix = inp[bt]
            out[bt * C:(bt + 1) * C] = wte[ix * C:(ix + 1) * C]
        return
    for bt in prange(B * T):
        t = bt % T
        ix = inp[bt]
        o = bt * C
        for c in range(C):
            out[o + c] = wte[ix * C + c] + wpe[t * C + c]


@njit(**JIT)
def encoder_backward(dwte, dwpe, dout, inp, B, T, C):
    # dwte (Vp,C) += dout rows at the token ids;  dwpe (maxT,C) += dout summed over the batch.
    # Serial on purpose: two positions holding the same token write the same dwte row. dwpe may be None.
    if dwpe is None:
        for bt in range(B * T):
            ix = inp[bt]
            for c in range(C):
                dwte[ix * C + c] += dout[bt * C + c]
        return
    for bt in range(B * T):
        t = bt % T
        ix = inp[bt]
        o = bt * C
        for c in range(C):
            d = dout[o + c]
            dwte[ix * C + c] += d
            dwpe[t * C + c] += d
