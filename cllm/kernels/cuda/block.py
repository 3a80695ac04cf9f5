"""cllm/kernels/block.py's fused block kernels as their kernels in sequence.

Legend: B batch, T time, C channels.
The CPU fuses them to wake its thread team fewer times; a GPU launch has no team to wake, so here
each is the launches it stands for. No dropout on the device yet (cllm/device.py refuses it).
"""
from .elementwise import residual_forward
from .layernorm import layernorm_forward
from .matmul import matmul_forward, matmul_gelu_forward


def layernorm_matmul_forward(ln, mean, rstd, out, inp, lnw, lnb, weight, bias, B, T, C, OC):
    # ln (B,T,C), mean, rstd (B,T) = layernorm(inp); out (B,T,OC) = ln @ weight^T + bias (may be None)
    layernorm_forward(ln, mean, rstd, inp, lnw, lnb, B, T, C)
    matmul_forward(out, ln, weight, bias, B, T, C, OC)


def block_tail_forward(attproj, residual2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, residual3,
                       atty, residual, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, B, T, C,
                       drop=0, key_attproj=0, key_fcproj=0):
    # the block after attention, as cllm/kernels/block.py's kernel of this name (without dropout)
    if drop:
        raise ValueError("dropout is not implemented on the CUDA device")
    N = B * T * C
    matmul_forward(attproj, atty, attprojw, attprojb, B, T, C, C)
    residual_forward(residual2, residual, attproj, N)
    layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, ln2w, ln2b, B, T, C)
    matmul_gelu_forward(fch, fch_gelu, ln2, fcw, fcb, B, T, C, 4 * C)
    matmul_forward(fcproj, fch_gelu, fcprojw, fcprojb, B, T, 4 * C, C)
    residual_forward(residual3, residual2, fcproj, N)
