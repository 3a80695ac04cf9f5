"""AdamW (PyTorch's formula, as cllm/kernels/adamw.py) and the gradient norm, on the device.

Legend: N element count.
"""
import math

import numpy as np
from numba import cuda

from ._common import F32, ROW_THREADS, THREADS, block_sum, blocks

# blocks of the gradient-norm reduction: each sums a strided share of the buffer in float64 into
# its own partial, and one more block adds the partials in a fixed order (deterministic)
NORM_BLOCKS = 4 if ROW_THREADS < 32 else 256


@cuda.jit
def _adamw(params, grads, m, v, N, b1, b2, omb1, omb2, decay, step_size, bc2_sqrt, eps):
    for i in range(cuda.grid(1), N, cuda.gridsize(1)):
        g = grads[i]
        mi = b1 * m[i] + omb1 * g
        vi = b2 * v[i] + omb2 * g * g
        m[i] = mi
        v[i] = vi
        denom = math.sqrt(vi) / bc2_sqrt + eps
        params[i] = params[i] * decay - step_size * mi / denom


def adamw_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, t):
    # params, grads, m, v (N); t the step number from 1. The scalars are formed in float64 on the
    # host and cast once, as the CPU kernel forms them (1 - beta in float64: see cllm/kernels/adamw.py).
    N = params.size
    _adamw[blocks(N), THREADS](params, grads, m, v, N, F32(beta1), F32(beta2), F32(1.0 - beta1), F32(1.0 - beta2),
                               F32(1.0 - lr * weight_decay), F32(lr / (1.0 - beta1 ** t)),
                               F32(math.sqrt(1.0 - beta2 ** t)), F32(eps))


@cuda.jit
def _sumsq_partials(partials, grads, N):
    # partials (NORM_BLOCKS) float64: block b's sum of squares over its grid-stride share
    buf = cuda.shared.array(ROW_THREADS, dtype=np.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(cuda.grid(1), N, cuda.gridsize(1)):
        g = np.float64(grads[i])
        acc += g * g
    total = block_sum(buf, acc)
    if tid == 0:
        partials[cuda.blockIdx.x] = total


@cuda.jit
def _sum_partials(out, partials, n):
    # out[0] = the partials' sum, in order, by one thread
    if cuda.grid(1) == 0:
        total = 0.0
        for i in range(n):
            total += partials[i]
        out[0] = total


def grad_norm_squared(out, grads, partials):
    # out[0] (float64, device) = sum of squares of grads (N), accumulated in float64;
    # partials: float64 device scratch of NORM_BLOCKS
    _sumsq_partials[NORM_BLOCKS, ROW_THREADS](partials, grads, grads.size)
    _sum_partials[1, 1](out, partials, NORM_BLOCKS)
