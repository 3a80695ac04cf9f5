"""Causal multi-head self-attention over packed q, k, v, fused per (batch, head), as cllm/kernels/attention.py.

Legend: B batch, T time, C channels, NH heads, hs = C/NH head size.
inp (B,T,3C) holds q, k, v of each position; head h uses channels [h*hs, (h+1)*hs) of each.
att (B,NH,T,T) keeps the probabilities, 0 above the diagonal; the forward writes each row's scaled
scores there first and turns them into probabilities in place.
The grid is (blocks of ATT_ROWS query rows, B*NH): a thread owns one query row of one head and does
its scores, softmax and weighted sum of values in one pass, so no (T,T) product is a separate launch.
"""
import math

from numba import cuda

from ._common import ATT_ROWS, F32


@cuda.jit
def _attention_forward(out, att, inp, T, C, NH, scale):
    bh = cuda.blockIdx.y
    t = cuda.blockIdx.x * ATT_ROWS + cuda.threadIdx.x
    if t >= T:
        return
    b = bh // NH
    h = bh % NH
    hs = C // NH
    C3 = 3 * C
    q0 = (b * T + t) * C3 + h * hs  # this row's q; key t2's k is at (b*T + t2)*3C + C + h*hs
    a0 = (bh * T + t) * T  # this row of att
    mx = F32(-math.inf)
    for t2 in range(t + 1):
        k0 = (b * T + t2) * C3 + C + h * hs
        s = F32(0)
        for i in range(hs):
            s += inp[q0 + i] * inp[k0 + i]
        s *= scale
        att[a0 + t2] = s
        mx = max(mx, s)
    total = F32(0)
    for t2 in range(t + 1):
        e = math.exp(att[a0 + t2] - mx)
        att[a0 + t2] = e
        total += e
    inv = F32(1) / total
    for t2 in range(t + 1):
        att[a0 + t2] *= inv
    for t2 in range(t + 1, T):  # the causal mask: the future gets probability 0
        att[a0 + t2] = F32(0)
    y0 = (b * T + t) * C + h * hs
    for i in range(hs):
        s = F32(0)
        for t2 in range(t + 1):
            s += att[a0 + t2] * inp[(b * T + t2) * C3 + 2 * C + h * hs + i]
        out[y0 + i] = s


def attention_forward(out, att, inp, B, T, C, NH):
    # out (B,T,C);  att (B,NH,T,T);  inp (B,T,3C)
    scale = F32(1.0 / math.sqrt(C // NH))
    _attention_forward[((T + ATT_ROWS - 1) // ATT_ROWS, B * NH), ATT_ROWS](out, att, inp, T, C, NH, scale)


@cuda.jit
def _attention_backward_rows(dinp, dpreatt, dout, inp, att, T, C, NH, scale, overwrite):
    # per query row t: dP = dout_t v^T, dS = P * (dP - rowsum(P dP)) (kept in dpreatt), dq_t = dS k * scale
    bh = cuda.blockIdx.y
    t = cuda.blockIdx.x * ATT_ROWS + cuda.threadIdx.x
    if t >= T:
        return
    b = bh // NH
    h = bh % NH
    hs = C // NH
    C3 = 3 * C
    a0 = (bh * T + t) * T
    y0 = (b * T + t) * C + h * hs
    s = F32(0)
    for t2 in range(t + 1):
        v0 = (b * T + t2) * C3 + 2 * C + h * hs
        d = F32(0)
        for i in range(hs):
            d += dout[y0 + i] * inp[v0 + i]
        dpreatt[a0 + t2] = d
        s += att[a0 + t2] * d
    for t2 in range(t + 1):
        dpreatt[a0 + t2] = att[a0 + t2] * (dpreatt[a0 + t2] - s)
    for t2 in range(t + 1, T):
        dpreatt[a0 + t2] = F32(0)
    q0 = (b * T + t) * C3 + h * hs
    for i in range(hs):
        g = F32(0)
        for t2 in range(t + 1):
            g += dpreatt[a0 + t2] * inp[(b * T + t2) * C3 + C + h * hs + i]
        g *= scale
        dinp[q0 + i] = g if overwrite else dinp[q0 + i] + g


@cuda.jit
def _attention_backward_keys(dinp, dpreatt, dout, inp, att, T, C, NH, scale, overwrite):
    # per key row t2 (after the rows kernel): dk_t2 = sum over t >= t2 of dS[t,t2] q_t * scale,
    # dv_t2 = sum over t >= t2 of P[t,t2] dout_t
    bh = cuda.blockIdx.y
    t2 = cuda.blockIdx.x * ATT_ROWS + cuda.threadIdx.x
    if t2 >= T:
        return
    b = bh // NH
    h = bh % NH
    hs = C // NH
    C3 = 3 * C
    k0 = (b * T + t2) * C3 + C + h * hs
    for i in range(hs):
        gk = F32(0)
        gv = F32(0)
        for t in range(t2, T):
            a = (bh * T + t) * T + t2
            gk += dpreatt[a] * inp[(b * T + t) * C3 + h * hs + i]
            gv += att[a] * dout[(b * T + t) * C + h * hs + i]
        gk *= scale
        dinp[k0 + i] = gk if overwrite else dinp[k0 + i] + gk
        dinp[k0 + C + i] = gv if overwrite else dinp[k0 + C + i] + gv


def attention_backward(dinp, dpreatt, dout, inp, att, B, T, C, NH, overwrite=False):
    # dinp (B,T,3C) += ... (= with overwrite);  dpreatt (B,NH,T,T) is written (=) with the scores'
    # gradient dS, which the keys' pass reads (unlike the CPU kernel it is scratch, not accumulated);
    # dout (B,T,C);  inp (B,T,3C);  att (B,NH,T,T)
    scale = F32(1.0 / math.sqrt(C // NH))
    grid = ((T + ATT_ROWS - 1) // ATT_ROWS, B * NH)
    _attention_backward_rows[grid, ATT_ROWS](dinp, dpreatt, dout, inp, att, T, C, NH, scale, overwrite)
    _attention_backward_keys[grid, ATT_ROWS](dinp, dpreatt, dout, inp, att, T, C, NH, scale, overwrite)
