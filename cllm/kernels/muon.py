"""Muon's update of the hidden weight matrices: Nesterov momentum, Newton-Schulz orthogonalization
through BLAS, the scaled step (cllm/optim.py's Muon orchestrates it; docs/training.md describes it).

Each matrix is orthogonalized whole by one thread, calling BLAS's gemm (cllm/kernels/blas.py) on it, and
the threads share the matrices out. NumPy's matmul over the layers' stacked matrices (BLAS single-threaded,
as cllm/runtime.py sets it) took 1.3x this kernel's time for the Newton-Schulz alone, at 4 layers of
width 192 on two cores (96 against 126 ms, measured alternately in one process).

Legend: r, c a matrix's rows and columns (row-major, out x in as the model stores them), n = min(r, c),
E matrices, N element count.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PJIT
from .blas import NO_TRANS, TRANS, gemm

# the quintic's coefficients (Keller Jordan's Muon): X <- aX + (bA + cA^2)X with A = X X^T. They are
# tuned for speed, not convergence: the singular values land in roughly [0.7, 1.2], not on 1.
NS_A, NS_B, NS_C = 3.4445, -4.7750, 2.0315
NS_EPS = 1e-7  # added to the Frobenius norm before dividing by it


@njit(**JIT)
def work_size(r, c):
    # floats of newton_schulz's scratch for an (r, c) matrix: two copies of it and two (n, n)
    n = min(r, c)
    return 2 * r * c + 2 * n * n


@njit(**JIT)
def newton_schulz(work, r, c, steps):
    # work (work_size(r, c)): its first r*c floats hold the matrix X (r, c) on entry. Returns the view of
    # work that holds the orthogonalized X at the end (the first or the second r*c floats).
    # X is divided by its Frobenius norm (+ NS_EPS), so that every singular value is <= 1, then
    # `steps` quintic iterations push them towards 1. A = X X^T (n, n) is taken on the small side:
    # for a tall matrix (r > c) that is X^T X, and the update X <- aX + X B is the transposed one's.
    N = r * c
    n = min(r, c)
    x = work[:N]
    y = work[N:2 * N]
    a_ = work[2 * N:2 * N + n * n]
    b_ = work[2 * N + n * n:2 * N + 2 * n * n]
    total = 0.0
    for i in range(N):
        v = np.float64(x[i])
        total += v * v
    inv = x.dtype.type(1.0 / (np.sqrt(total) + NS_EPS))
    for i in range(N):
        x[i] *= inv
    ca, cb = x.dtype.type(NS_A), x.dtype.type(NS_B)
    for _ in range(steps):
        if r <= c:  # A = X X^T
            gemm(NO_TRANS, TRANS, n, n, c, 1.0, x, 0, c, x, 0, c, 0.0, a_, 0, n)
        else:  # A = X^T X
            gemm(TRANS, NO_TRANS, n, n, r, 1.0, x, 0, c, x, 0, c, 0.0, a_, 0, n)
        for i in range(n * n):  # B = bA + cA^2
            b_[i] = cb * a_[i]
        gemm(NO_TRANS, NO_TRANS, n, n, n, NS_C, a_, 0, n, a_, 0, n, 1.0, b_, 0, n)
        for i in range(N):  # Y = aX + BX (or XB)
            y[i] = ca * x[i]
        if r <= c:
            gemm(NO_TRANS, NO_TRANS, r, c, r, 1.0, b_, 0, n, x, 0, c, 1.0, y, 0, c)
        else:
            gemm(NO_TRANS, NO_TRANS, r, c, c, 1.0, x, 0, c, b_, 0, n, 1.0, y, 0, c)
        x, y = y, x
    return x


@njit(**PJIT)
def muon_update(params, grads, momentum, table, starts, work, mu, lr, decay, steps):
    # params, grads (P) the model's flat buffers; momentum (M) the flat momentum of the matrices;
    # table (E, 5) int64 rows (param offset, momentum offset, r, c, work offset), grouped by thread:
    # thread k takes rows starts[k]:starts[k+1] and its scratch at their work offset (one matrix at
    # a time, each alone in its thread, with BLAS single-threaded). Per matrix W (r, c), gradient G:
    #   B = mu*B + G;  U = G + mu*B (Nesterov);  O = newton_schulz(U)
    #   W = decay*W - lr * sqrt(max(1, r/c)) * O
    # The scale sqrt(max(1, r/c)) is Keller Jordan's published one (his muon.py; others match AdamW's RMS
    # instead): with it the update's RMS entry is 1/sqrt(c) for every shape, where a tall O's orthonormal
    # columns alone give 1/sqrt(r).
    dt = params.dtype.type
    mu_, decay_ = dt(mu), dt(decay)
    for k in prange(starts.shape[0] - 1):
        for e in range(starts[k], starts[k + 1]):
            p0, m0, r, c, w0 = table[e, 0], table[e, 1], table[e, 2], table[e, 3], table[e, 4]
            N = r * c
            w = work[w0:w0 + work_size(r, c)]
            for i in range(N):
                g = grads[p0 + i]
                b = mu_ * momentum[m0 + i] + g
                momentum[m0 + i] = b
                w[i] = g + mu_ * b
            o = newton_schulz(w, r, c, steps)
            step = dt(lr * np.sqrt(max(1.0, r / c)))
            for i in range(N):
                params[p0 + i] = decay_ * params[p0 + i] - step * o[i]

