"""GPT-2's causal multi-head self-attention: grouped-query attention with one kv head per query head.

Legend: B batch, T time, C channels, NH heads, hs = C/NH head size.
inp (B,T,3C) holds, for each position, q (C) then k (C) then v (C): head h uses channels [h*hs, (h+1)*hs)
of each, which is cllm/kernels/gqa.py's packed row with NKV = NH. So GPT-2 runs gqa's kernels (the same
products, the probabilities' dropout with the same masks); these wrappers keep GPT-2's signature.
att (B,NH,T,T) keeps the softmax probabilities, 0 above the diagonal; drop, key: dropout on them
(cllm/kernels/dropout.py's threshold and key; 0: none).
"""
from numba import njit

from ._common import JIT
from .gqa import gqa_backward, gqa_forward


@njit(**JIT)  # gqa's kernels run the heads in parallel
def attention_forward(out, att, inp, B, T, C, NH, drop=0, key=0):
    # out (B,T,C);  att (B,NH,T,T);  inp (B,T,3C)
    gqa_forward(out, att, inp, B, T, NH, NH, C // NH, drop, key)


@njit(**JIT)
def attention_backward(dinp, dout, inp, att, B, T, C, NH, overwrite=False, drop=0, key=0):
    # dinp (B,T,3C) += ... (= with overwrite);  dout (B,T,C);  inp (B,T,3C);  att (B,NH,T,T)
    gqa_backward(dinp, dout, inp, att, B, T, NH, NH, C // NH, overwrite, drop, key)
