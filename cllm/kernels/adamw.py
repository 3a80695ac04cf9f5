"""AdamW (decoupled weight decay, bias-corrected moments, PyTorch's formula), grad-norm and buffer helpers.

Legend: N element count.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT
from .matmul import ROW_BLOCKS


@njit(**JIT)
def _adamw_block(params, grads, m, v, b1, b2, omb1, omb2, decay, step_size, bc2_sqrt, eps):
    # the update of one contiguous block (all arguments the block's slices, or scalars of their dtype;
    # omb1, omb2 are 1 - beta1, 1 - beta2)
    for i in range(params.size):
        g = grads[i]
        mi = b1 * m[i] + omb1 * g
        vi = b2 * v[i] + omb2 * g * g
        m[i] = mi
        v[i] = vi
        denom = np.sqrt(vi) / bc2_sqrt + eps
        params[i] = params[i] * decay - step_size * mi / denom


@njit(**PJIT)
def adamw_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, t):
    # params, grads, m, v (N); t is the step number, from 1.
    # p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p), in PyTorch's order of operations.
    # One contiguous block per thread, or one block on the calling thread for a small tensor.
    dt = params.dtype.type
    b1 = dt(beta1)
    b2 = dt(beta2)
    # 1 - beta in float64: in float32, 1 - float32(0.999) is off by 1.3e-5 relative (cancellation),
    # which bias correction (computed from the exact beta) turns into a step error of ~6e-6
    omb1 = dt(1.0 - beta1)
    omb2 = dt(1.0 - beta2)
    decay = dt(1.0 - lr * weight_decay)
    step_size = dt(lr / (1.0 - beta1 ** t))
    bc2_sqrt = dt(np.sqrt(1.0 - beta2 ** t))
    eps_ = dt(eps)
    N = params.shape[0]
    # Four times the elementwise threshold: the update streams four arrays through memory, which a
    # second core barely speeds up; measured one thread against two (the team asleep, as in a step):
    # 39 against 52 us at 128K elements, 152 against 135 at 512K, 616 against 374 at 1.5M.
    if N < PARALLEL_MIN_WORK * 4:
        _adamw_block(params, grads, m, v, b1, b2, omb1, omb2, decay, step_size, bc2_sqrt, eps_)
        return
    for blk in prange(ROW_BLOCKS):
        i0 = blk * N // ROW_BLOCKS
        i1 = (blk + 1) * N // ROW_BLOCKS
        _adamw_block(params[i0:i1], grads[i0:i1], m[i0:i1], v[i0:i1], b1, b2, omb1, omb2, decay, step_size,
                     bc2_sqrt, eps_)


@njit(**PJIT)
def grad_norm_squared(grads):
    # sum of squares of grads (N), accumulated in float64 so that large buffers lose nothing
    total = 0.0
    for i in prange(grads.shape[0]):
        g = np.float64(grads[i])
        total += g * g
    return total


@njit(**PJIT)
def scale_inplace(x, s):
    # x (N) *= s
    f = x.dtype.type(s)
    for i in prange(x.shape[0]):
        x[i] *= f


@njit(**PJIT)
def ema_update(average, params, decay):
    # average (N) += (1 - decay) * (params (N) - average): the moving average of the weights (--ema-decay,
    # cllm/training/average.py); 1 - decay in float64, as adamw_update's 1 - beta
    omd = average.dtype.type(1.0 - decay)
    for i in prange(average.shape[0]):
        average[i] += omd * (params[i] - average[i])


@njit(**PJIT)
def fill_inplace(x, value):
    # x (N) = value; on the calling thread below PARALLEL_MIN_WORK (the backward fills the (B*T) loss
    # gradients every step: waking the thread team would cost more than the fill)
    f = x.dtype.type(value)
    if x.shape[0] < PARALLEL_MIN_WORK:
        x[:] = f
        return
    for i in prange(x.shape[0]):
        x[i] = f
