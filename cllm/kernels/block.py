"""A transformer block's row-wise kernels fused into two parallel regions.

Legend: B batch, T time, C channels.
Everything in a block's forward except attention works row by row: a row's LayerNorm, its rows of
each product (single-threaded BLAS on a block of rows, as cllm/kernels/matmul.py), its GELU, dropout
and residual sums need no other row. So each thread takes its block of rows through the whole
chain, and the forward wakes the thread team three times per layer (this, attention, this) instead
of five (more where the small LayerNorm and residual kernels run in parallel). Measured on the baby
GPT (4 layers, 128 dims, B*T = 768): forward 10.50 -> 9.78 ms, 2.3% of a training step, the results
identical; no change at the medium config's size (L6 NH8 C256), where the products dwarf a wake-up (~50 us on this
VM). The backward cannot follow: each weight gradient needs every row of its output gradient.
"""
from numba import njit, prange

from ._common import PJIT, ROW_BLOCKS
from .dropout import dropout_span, keep_scale
from .gelu import gelu_span
from .layernorm import layernorm_rows
from .matmul import linear_rows
from .residual import add_span


@njit(**PJIT)
def layernorm_matmul_forward(ln, mean, rstd, out, inp, lnw, lnb, weight, bias, B, T, C, OC):
    # ln (B,T,C), mean, rstd (B,T) = layernorm_forward(inp (B,T,C), lnw, lnb (C));
    # out (B,T,OC) = matmul_forward(ln, weight (OC,C), bias (OC)); bias may be None
    BT = B * T
    nblk = min(ROW_BLOCKS, BT)
    for blk in prange(nblk):
        r0 = blk * BT // nblk
        r1 = (blk + 1) * BT // nblk
        layernorm_rows(ln, mean, rstd, inp, lnw, lnb, C, r0, r1)
        linear_rows(out, ln, weight, bias, C, OC, r0, r1)


@njit(**PJIT)
def block_tail_forward(attproj, residual2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, residual3,
                       atty, residual, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, B, T, C,
                       drop=0, key_attproj=0, key_fcproj=0):
    # The block after attention, as its kernels in sequence (all (B,T,C) but fch, fch_gelu (B,T,4C)):
    #   attproj = atty @ attprojw^T + attprojb, then dropout (drop > 0, mask key_attproj), in place
    #   residual2 = residual + attproj
    #   ln2, ln2_mean, ln2_rstd = layernorm(residual2; ln2w, ln2b)
    #   fch = ln2 @ fcw^T + fcb;  fch_gelu = gelu(fch)
    #   fcproj = fch_gelu @ fcprojw^T + fcprojb, then dropout (mask key_fcproj), in place
    #   residual3 = residual2 + fcproj
    BT = B * T
    nblk = min(ROW_BLOCKS, BT)
    C4 = 4 * C
    scale = keep_scale(attproj, drop)
    for blk in prange(nblk):
        r0 = blk * BT // nblk
        r1 = (blk + 1) * BT // nblk
        rows = slice(r0 * C, r1 * C)  # this block's elements of every (B,T,C) tensor
        linear_rows(attproj, atty, attprojw, attprojb, C, C, r0, r1)
        if drop > 0:
            dropout_span(attproj[rows], attproj[rows], key_attproj, r0 * C, drop, scale)
        add_span(residual2[rows], residual[rows], attproj[rows])
        layernorm_rows(ln2, ln2_mean, ln2_rstd, residual2, ln2w, ln2b, C, r0, r1)
        linear_rows(fch, ln2, fcw, fcb, C, C4, r0, r1)
        gelu_span(fch_gelu[r0 * C4:r1 * C4], fch[r0 * C4:r1 * C4])
        linear_rows(fcproj, fch_gelu, fcprojw, fcprojb, C4, C, r0, r1)
        if drop > 0:
            dropout_span(fcproj[rows], fcproj[rows], key_fcproj, r0 * C, drop, scale)
        add_span(residual3[rows], residual2[rows], fcproj[rows])
