"""Muon's update of the hidden weight matrices: Nesterov momentum, Newton-Schulz orthogonalization
through BLAS, the scaled step (cllm/optim.py's Muon orchestrates it; docs/training.md describes it).

Each matrix is orthogonalized whole by one thread, calling BLAS (cllm/kernels/blas.py's gemm, and syrk
below) on it, and the threads share the matrices out. NumPy's matmul over the layers' stacked matrices
(BLAS single-threaded, as cllm/runtime.py sets it) took 1.3x the time of this kernel's plain iteration
through gemm for the Newton-Schulz alone, at 4 layers of width 192 on two cores (96 against 126 ms,
measured alternately in one process).

Two ways to cut the products' work without changing what is computed (the published quintic, its
coefficients and its step count; tests/test_muon.py checks it against a float64 and a PyTorch one):
- the symmetric products (A = X X^T, A A) go through BLAS's syrk, which computes one triangle: half
  gemm's multiply-adds, 0.7x its time at n = 192 on the Intel Xeon;
- a matrix much longer than wide (m = max(r, c) > 5/3 n, n = min(r, c): the MLP's and q|k|v's at the
  recipe's size) runs its iterations in the small (n, n) Gram space, in segments. From a segment's
  start X_0, every iterate is X_k = Q_k X_0 with Q_k a polynomial in A_0 = X_0 X_0^T, so with
  P_k = aI + bA_k + cA_k^2: Q_{k+1} = P_k Q_k and A_{k+1} = X_{k+1} X_{k+1}^T = P_k^2 A_k, n^3 products
  that do not grow with m; X = Q X_0 ends the segment. A segment of L iterations costs 3 n^2 m +
  (6L - 5) n^3 multiply-adds against the plain iterations' L (3 n^2 m + n^3) (syrk counted as half).
  The segments are short because Q_k's entries grow to a^k (a = 3.4445) along the small singular
  values, and their float32 rounding, applied to X_0, is the error: on matrices whose singular values
  spread over four decades, one segment of 5 left 10-40x the plain float32 iteration's error, 4 + 1
  (plain) up to 6x, 2 + 3 up to 3x, and 3 + 2, the 5 steps' split here, the plain iteration's own
  (2e-6 to 5e-6 of a float64 one, tests/test_muon.py). At n = 192: 1.32x fewer multiply-adds than
  the plain iteration through syrk for q|k|v (m = 576), 1.48x for fcw (768), and 1.84x and 2.05x
  fewer than the plain iteration through gemm alone.

Legend: r, c a matrix's rows and columns (row-major, out x in as the model stores them), n = min(r, c),
m = max(r, c), s Newton-Schulz steps, E matrices, N element count.
"""
import llvmlite.binding as llvm
import numpy as np
from numba import njit, prange, types
from numba.core.types import ExternalFunction
from numba.extending import get_cython_function_address

from ._common import JIT, PJIT
from .blas import NO_TRANS, TRANS, gemm

# the quintic's coefficients (Keller Jordan's Muon): X <- aX + (bA + cA^2)X with A = X X^T. They are
# tuned for speed, not convergence: the singular values land in roughly [0.7, 1.2], not on 1.
NS_A, NS_B, NS_C = 3.4445, -4.7750, 2.0315
NS_EPS = 1e-7  # added to the Frobenius norm before dividing by it

# void xsyrk(char *uplo, char *trans, int *n, int *k, x *alpha, x *a, int *lda, x *beta, x *c, int *ldc):
# SciPy's BLAS (the one Numba's gemm calls), every argument a pointer (Fortran's), passed as integers.
# Registered under names of our own, so that a kernel cached on disk finds them by name when it loads,
# as it finds Numba's numba_xxgemm.
for _kind in "sd":
    llvm.add_symbol(f"cllm_{_kind}syrk", get_cython_function_address("scipy.linalg.cython_blas", f"{_kind}syrk"))
_SYRK_SIG = types.void(*([types.uintp] * 10))
_ssyrk = ExternalFunction("cllm_ssyrk", _SYRK_SIG)
_dsyrk = ExternalFunction("cllm_dsyrk", _SYRK_SIG)
_UPPER = np.int8(ord("U"))


@njit(**JIT)
def syrk(trans, n, k, alpha, a, a_off, lda, beta, c, c_off):
    # Row-major C (n, n), its lower triangle only (the rest untouched) = alpha op(A) op(A)^T + beta C,
    # op(A) = A (n, k) for NO_TRANS, A^T (A (k, n)) for TRANS; lda A's row stride; C's is n. Row-major
    # A is column-major A^T, and the lower triangle row-major is the upper one column-major.
    ints = np.empty(4, np.int32)
    ints[0], ints[1], ints[2], ints[3] = n, k, lda, n
    chars = np.empty(2, np.int8)
    chars[0] = _UPPER
    chars[1] = TRANS if trans == NO_TRANS else NO_TRANS
    scalars = np.empty(2, dtype=c.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    sz = c.itemsize
    ip, cp, sp = ints.ctypes.data, chars.ctypes.data, scalars.ctypes.data
    pa, pc = a.ctypes.data + a_off * sz, c.ctypes.data + c_off * sz
    if sz == 4:
        _ssyrk(cp, cp + 1, ip, ip + 4, sp, pa, ip + 8, sp + sz, pc, ip + 12)
    else:
        _dsyrk(cp, cp + 1, ip, ip + 4, sp, pa, ip + 8, sp + sz, pc, ip + 12)


@njit(**JIT)
def segment_length(r, c, remaining):
    # the iterations newton_schulz takes in its next segment (the module's docstring): 1, the plain
    # iteration, unless the matrix is long enough (3m > 5n) for the Gram space to save work; then at
    # most 3, and 2 for the last (a last 3 left up to 3x the plain iteration's rounding error, 4 + 1 6x)
    if 3 * max(r, c) <= 5 * min(r, c) or remaining == 1:
        return 1
    return min(3, remaining - 2) if remaining > 2 else remaining


def ns_cost(r: int, c: int, steps: int) -> int:
    """newton_schulz's multiply-adds on an (r, c) matrix (syrk's counted as half gemm's): what
    cllm/optim.py's Muon balances the threads by."""
    n, m = min(r, c), max(r, c)
    total, remaining = 0, steps
    while remaining:
        length = segment_length(r, c, remaining)
        total += n * n * (3 * m + n if length == 1 else 3 * m + (6 * length - 5) * n)
        remaining -= length
    return total


@njit(**JIT)
def work_size(r, c):
    # floats of newton_schulz's scratch for an (r, c) matrix: two copies of it and four (n, n)
    n = min(r, c)
    return 2 * r * c + 4 * n * n


@njit(**JIT)
def _symmetrize(a, n):
    # a (n, n): the lower triangle copied onto the upper one (syrk writes the lower one only)
    for i in range(n):
        for j in range(i):
            a[j * n + i] = a[i * n + j]


@njit(**JIT)
def _gram(a_, x, r, c, n, alpha):
    # A (n, n) = alpha X X^T for a wide X (r, c), alpha X^T X for a tall one: the small side's Gram
    # matrix, full
    if r <= c:
        syrk(NO_TRANS, n, c, alpha, x, 0, c, 0.0, a_, 0)
    else:
        syrk(TRANS, n, r, alpha, x, 0, c, 0.0, a_, 0)
    _symmetrize(a_, n)


@njit(**JIT)
def _quintic(p_, a_, n, diag):
    # P (n, n) = diag*I + bA + cA^2, full, from A (n, n) symmetric: A A = A A^T, one syrk
    for i in range(n * n):
        p_[i] = a_[i]
    syrk(NO_TRANS, n, n, NS_C, a_, 0, n, NS_B, p_, 0)
    _symmetrize(p_, n)
    for i in range(n):
        p_[i * n + i] += diag


@njit(**JIT)
def _apply(y, b_, x, r, c, n, alpha, beta):
    # Y (r, c) = alpha B X + beta Y for a wide X (B (r, r)), alpha X B + beta Y for a tall one (B (c, c))
    if r <= c:
        gemm(NO_TRANS, NO_TRANS, r, c, r, alpha, b_, 0, n, x, 0, c, beta, y, 0, c)
    else:
        gemm(NO_TRANS, NO_TRANS, r, c, c, alpha, x, 0, c, b_, 0, n, beta, y, 0, c)


@njit(**JIT)
def newton_schulz(work, r, c, steps):
    # work (work_size(r, c)): its first r*c floats hold the matrix X (r, c) on entry. Returns the view of
    # work that holds the orthogonalized X at the end (the first or the second r*c floats).
    total = 0.0
    for i in range(r * c):
        v = np.float64(work[i])
        total += v * v
    return _newton_schulz(work, r, c, steps, total)


@njit(**JIT)
def _newton_schulz(work, r, c, steps, sum_squares):
    # newton_schulz with X's sum of squares (float64) given. X is divided by its Frobenius norm
    # (+ NS_EPS), so that every singular value is <= 1, then `steps` quintic iterations push them towards
    # 1. A = X X^T (n, n) is taken on the small side: for a tall matrix (r > c) that is X^T X, and the
    # update X <- aX + X B is the transposed one's. The division is folded into the first products
    # (their alpha: 1/norm^2 for the Gram matrix, 1/norm for the products with X), not a pass over X.
    N = r * c
    n = min(r, c)
    nn = n * n
    x = work[:N]
    y = work[N:2 * N]
    a_ = work[2 * N:2 * N + nn]
    p_ = work[2 * N + nn:2 * N + 2 * nn]
    q_ = work[2 * N + 2 * nn:2 * N + 3 * nn]
    t_ = work[2 * N + 3 * nn:2 * N + 4 * nn]
    inv = 1.0 / (np.sqrt(sum_squares) + NS_EPS)
    done = 0
    while done < steps:
        length = segment_length(r, c, steps - done)
        if length == 1:  # the plain iteration: X <- aX + (bA + cA^2)X
            _gram(a_, x, r, c, n, inv * inv)
            _quintic(p_, a_, n, 0.0)
            # aX apart, not a on P's diagonal: that rounded the small singular values' part 2.5x worse
            ca = x.dtype.type(NS_A * inv)
            for i in range(N):
                y[i] = ca * x[i]
            _apply(y, p_, x, r, c, n, inv, 1.0)
        else:  # `length` iterations in the Gram space (the module's docstring), from X_0 = X
            _gram(a_, x, r, c, n, inv * inv)
            for k in range(length):
                _quintic(p_, a_, n, NS_A)  # P_k
                if k == 0:  # Q_1 = P_0
                    for i in range(nn):
                        q_[i] = p_[i]
                else:  # Q_{k+1} = P_k Q_k
                    gemm(NO_TRANS, NO_TRANS, n, n, n, 1.0, p_, 0, n, q_, 0, n, 0.0, t_, 0, n)
                    q_, t_ = t_, q_
                if k < length - 1:  # A_{k+1} = P_k^2 A_k (P_k^2 = P_k P_k^T, a syrk)
                    syrk(NO_TRANS, n, n, 1.0, p_, 0, n, 0.0, t_, 0)
                    _symmetrize(t_, n)
                    gemm(NO_TRANS, NO_TRANS, n, n, n, 1.0, t_, 0, n, a_, 0, n, 0.0, p_, 0, n)
                    # symmetric but for rounding: made exactly so (syrk would take A A^T for A A: 2.7x
                    # the error on a (100, 33) matrix, tests/test_muon.py)
                    _symmetrize(p_, n)
                    a_, p_ = p_, a_
            _apply(y, q_, x, r, c, n, inv, 0.0)  # X_length = Q_length X_0
        x, y = y, x
        inv = 1.0  # X is scaled from now on
        done += length
    if steps == 0:  # no product took the division
        scale = x.dtype.type(inv)
        for i in range(N):
            x[i] *= scale
    return x


# The elementwise passes take the matrix's slices: indexed at offsets into the whole buffers instead
# (grads[p0 + i]), the same loops took 3.4x the time (3.3 against 0.96 ms for the recipe's 1.8M
# weights on one core).
@njit(**JIT)
def _momentum(u, momentum, grads, mu):
    # momentum (N) = mu*momentum + grads; u (N) = grads + mu*momentum (Nesterov); returns U's sum of
    # squares (float64), newton_schulz's norm taken in the same pass
    total = 0.0
    for i in range(grads.size):
        g = grads[i]
        b = mu * momentum[i] + g
        momentum[i] = b
        v = g + mu * b
        u[i] = v
        total += np.float64(v) * np.float64(v)
    return total


@njit(**JIT)
def _step(params, o, decay, step):
    # params (N) = decay*params - step*o
    for i in range(params.size):
        params[i] = decay * params[i] - step * o[i]


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
            total = _momentum(w, momentum[m0:m0 + N], grads[p0:p0 + N], mu_)
            o = _newton_schulz(w, r, c, steps, total)
            _step(params[p0:p0 + N], o, decay_, dt(lr * np.sqrt(max(1.0, r / c))))
