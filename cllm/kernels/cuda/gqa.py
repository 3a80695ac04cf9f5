"""Causal grouped-query attention on the device, as cllm/kernels/gqa.py: forward, backward, and decoding from a
KV cache that holds only the kv heads.

Legend: B batch, T time, NH query heads, NKV kv heads, hs head size, C = NH*hs, W = (NH + 2*NKV)*hs,
rep = NH/NKV, maxT cache positions.
qkv (B,T,W): each position's NH query heads, then NKV key heads, then NKV value heads; query head h reads
kv head h // rep. att (B,NH,T,T) keeps the probabilities, 0 above the diagonal; the forward writes each
row's scaled scores there first and turns them into probabilities in place. kcache, vcache
(B,NKV,maxT,hs) as on the CPU (cllm/kernels/gqa.py).
Forward and backward follow cllm/kernels/cuda/attention.py: the grid is (blocks of ATT_ROWS rows, heads),
a thread owns one query row (forward, and dq in the backward) or one key row of a kv head (dk and dv,
summed over the group's query heads in one thread, so no two threads write the same gradient and no
atomics are needed). Decoding gives each (row, query head) a block of ROW_THREADS threads: attend_row, which
cllm/kernels/cuda/decode.py's cached attention (gpt2's transposed keys, llama's batched rows) shares.
"""
import math

from numba import cuda

from ._common import ATT_ROWS, F32, MAX_BLOCKS, ROW_THREADS, SIM, THREADS, block_max, block_sum, blocks, work_array

# the most blocks of the cached attention: each block has its own row of maxT scores in a work array and
# strides over the (row, head) pairs, so this bounds that array (1024 x maxT floats) without leaving SMs idle
ATTEND_BLOCKS = MAX_BLOCKS if SIM else 1024


@cuda.jit
def _gqa_forward(out, att, qkv, T, NH, NKV, hs, scale):
    bh = cuda.blockIdx.y
    t = cuda.blockIdx.x * ATT_ROWS + cuda.threadIdx.x
    if t >= T:
        return
    b = bh // NH
    h = bh % NH
    C = NH * hs
    W = C + 2 * NKV * hs
    kv = C + (h // (NH // NKV)) * hs  # the kv head's channels in a row; its values are NKV*hs further
    q0 = (b * T + t) * W + h * hs
    a0 = (bh * T + t) * T  # this row of att
    mx = F32(-math.inf)
    for t2 in range(t + 1):
        k0 = (b * T + t2) * W + kv
        s = F32(0)
        for i in range(hs):
            s += qkv[q0 + i] * qkv[k0 + i]
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
            s += att[a0 + t2] * qkv[(b * T + t2) * W + kv + NKV * hs + i]
        out[y0 + i] = s


def gqa_forward(out, att, qkv, B, T, NH, NKV, hs, drop=0, key=0):
    # out (B,T,NH*hs);  att (B,NH,T,T);  qkv (B,T,W);  drop, key: the CPU kernel's signature, where they
    # are its dropout; the device has no dropout (cllm/device.py's CudaModel refuses it before this)
    assert not drop, "no dropout on the CUDA device"
    scale = F32(1.0 / math.sqrt(hs))
    _gqa_forward[((T + ATT_ROWS - 1) // ATT_ROWS, B * NH), ATT_ROWS](out, att, qkv, T, NH, NKV, hs, scale)


@cuda.jit
def _gqa_backward_rows(dqkv, dS, dout, qkv, att, T, NH, NKV, hs, scale, overwrite):
    # per query row t of head h: dP = dout_t v^T, dS = P * (dP - rowsum(P dP)) (into the scratch dS),
    # dq_t = dS k * scale
    bh = cuda.blockIdx.y
    t = cuda.blockIdx.x * ATT_ROWS + cuda.threadIdx.x
    if t >= T:
        return
    b = bh // NH
    h = bh % NH
    C = NH * hs
    W = C + 2 * NKV * hs
    kv = C + (h // (NH // NKV)) * hs
    a0 = (bh * T + t) * T
    y0 = (b * T + t) * C + h * hs
    s = F32(0)
    for t2 in range(t + 1):
        v0 = (b * T + t2) * W + kv + NKV * hs
        d = F32(0)
        for i in range(hs):
            d += dout[y0 + i] * qkv[v0 + i]
        dS[a0 + t2] = d
        s += att[a0 + t2] * d
    for t2 in range(t + 1):
        dS[a0 + t2] = att[a0 + t2] * (dS[a0 + t2] - s)
    q0 = (b * T + t) * W + h * hs
    for i in range(hs):
        g = F32(0)
        for t2 in range(t + 1):
            g += dS[a0 + t2] * qkv[(b * T + t2) * W + kv + i]
        g *= scale
        dqkv[q0 + i] = g if overwrite else dqkv[q0 + i] + g


@cuda.jit
def _gqa_backward_keys(dqkv, dS, dout, qkv, att, T, NH, NKV, hs, scale, overwrite):
    # per key row t2 of kv head g (after the rows kernel), over the group's query heads h and the queries
    # t >= t2 that see it: dk_t2 = sum dS_h[t,t2] q_h,t * scale,  dv_t2 = sum P_h[t,t2] dout_h,t
    bg = cuda.blockIdx.y
    t2 = cuda.blockIdx.x * ATT_ROWS + cuda.threadIdx.x
    if t2 >= T:
        return
    b = bg // NKV
    g = bg % NKV
    rep = NH // NKV
    C = NH * hs
    W = C + 2 * NKV * hs
    k0 = (b * T + t2) * W + C + g * hs
    for i in range(hs):
        gk = F32(0)
        gv = F32(0)
        for h in range(g * rep, (g + 1) * rep):
            for t in range(t2, T):
                a = ((b * NH + h) * T + t) * T + t2
                gk += dS[a] * qkv[(b * T + t) * W + h * hs + i]
                gv += att[a] * dout[(b * T + t) * C + h * hs + i]
        gk *= scale
        dqkv[k0 + i] = gk if overwrite else dqkv[k0 + i] + gk
        dqkv[k0 + NKV * hs + i] = gv if overwrite else dqkv[k0 + NKV * hs + i] + gv


def gqa_backward(dqkv, dout, qkv, att, B, T, NH, NKV, hs, overwrite=False, drop=0, key=0):
    # dqkv (B,T,W) += ... (= with overwrite);  dout (B,T,NH*hs);  qkv (B,T,W);  att (B,NH,T,T). The scores'
    # gradient dS (B,NH,T,T) is a work array: the keys' pass reads what the rows' pass wrote. drop: as in
    # gqa_forward, always 0 here.
    assert not drop, "no dropout on the CUDA device"
    scale = F32(1.0 / math.sqrt(hs))
    dS = work_array("gqa_dS", B * NH * T * T)
    nrows = (T + ATT_ROWS - 1) // ATT_ROWS
    _gqa_backward_rows[(nrows, B * NH), ATT_ROWS](dqkv, dS, dout, qkv, att, T, NH, NKV, hs, scale, overwrite)
    _gqa_backward_keys[(nrows, B * NKV), ATT_ROWS](dqkv, dS, dout, qkv, att, T, NH, NKV, hs, scale, overwrite)


@cuda.jit
def _kv_write(kcache, vcache, qkv, B, T, NH, NKV, hs, pos0, maxT):
    # position pos0 + t's k and v of every kv head, from qkv (B,T,W), into the caches (B,NKV,maxT,hs)
    W = (NH + 2 * NKV) * hs
    for e in range(cuda.grid(1), B * T * NKV * hs, cuda.gridsize(1)):
        i = e % hs
        g = (e // hs) % NKV
        bt = e // (NKV * hs)
        b = bt // T
        t = bt % T
        c = ((b * NKV + g) * maxT + pos0 + t) * hs + i
        kcache[c] = qkv[bt * W + (NH + g) * hs + i]
        vcache[c] = qkv[bt * W + (NH + NKV + g) * hs + i]


@cuda.jit(device=True, inline=True)
def attend_row(out, o0, qkv, q0, keys, k0, kt, ki, values, v0, scores, s0, buf, n, hs, scale):
    # one query head of one row against the cached positions 0..n-1, by the block's ROW_THREADS threads (every
    # thread of the block must call it): out[o0:o0+hs] = softmax(scale * q.k_t) weighted sum of the v_t, with
    # q = qkv[q0:q0+hs], channel i of key t at keys[k0 + t*kt + i*ki] and of value t at values[v0 + t*hs + i].
    # Keys stored (maxT, hs) per head have kt = hs, ki = 1; transposed (hs, maxT) ones (cllm/kernels/decode.py's
    # gpt2 cache) kt = 1, ki = maxT, so that the threads' positions are adjacent floats. The threads stride over
    # the positions for the scores (scores[s0:s0+n], a work row), meet in shared max and sum (buf: a shared
    # (ROW_THREADS,) array), then stride over the channels for the weighted sum of values.
    tid = cuda.threadIdx.x
    mx = F32(-math.inf)
    for t in range(tid, n, ROW_THREADS):
        s = F32(0)
        for i in range(hs):
            s += qkv[q0 + i] * keys[k0 + t * kt + i * ki]
        s *= scale
        scores[s0 + t] = s
        mx = max(mx, s)
    mx = block_max(buf, mx)
    total = F32(0)
    for t in range(tid, n, ROW_THREADS):
        e = math.exp(scores[s0 + t] - mx)
        scores[s0 + t] = e
        total += e
    inv = F32(1) / block_sum(buf, total)  # its barriers also publish every thread's scores
    for i in range(tid, hs, ROW_THREADS):
        s = F32(0)
        for t in range(n):
            s += scores[s0 + t] * values[v0 + t * hs + i]
        out[o0 + i] = s * inv
    cuda.syncthreads()  # every thread has read the scores before the block's next row may overwrite them


@cuda.jit
def _attend_cached(out, qkv, kcache, vcache, scores, B, T, NH, NKV, hs, pos0, maxT, scale):
    # one block per (row b*T + t, query head h) in turn, over the cached positions 0..pos0+t (a position's
    # key is hs contiguous floats). scores: a row of maxT per block.
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    W = (NH + 2 * NKV) * hs
    s0 = cuda.blockIdx.x * maxT
    for rh in range(cuda.blockIdx.x, B * T * NH, cuda.gridDim.x):
        bt = rh // NH
        h = rh % NH
        b = bt // T
        c0 = (b * NKV + h // (NH // NKV)) * maxT * hs
        attend_row(out, rh * hs, qkv, bt * W + h * hs, kcache, c0, hs, 1, vcache, c0, scores, s0, buf,
                   pos0 + bt % T + 1, hs, scale)


def gqa_prefill(out, qkv, kcache, vcache, B, T, NH, NKV, hs, pos0, maxT):
    # out (B,T,NH*hs);  qkv (B,T,W) positions pos0..pos0+T-1 (pos0 + T <= maxT);  kcache, vcache
    # (B,NKV,maxT,hs): the block's k and v are written there first, positions before pos0 must hold the
    # earlier tokens'
    scale = F32(1.0 / math.sqrt(hs))
    _kv_write[blocks(B * T * NKV * hs), THREADS](kcache, vcache, qkv, B, T, NH, NKV, hs, pos0, maxT)
    nblocks = min(B * T * NH, ATTEND_BLOCKS)
    scores = work_array("gqa_scores", nblocks * maxT)
    _attend_cached[nblocks, ROW_THREADS](out, qkv, kcache, vcache, scores, B, T, NH, NKV, hs, pos0, maxT, scale)


def gqa_decode(out, qkv_row, kcache, vcache, B, NH, NKV, hs, pos, maxT):
    # out (B,NH*hs);  qkv_row (B,W) position pos's q, k, v;  kcache, vcache (B,NKV,maxT,hs): one position
    # of gqa_prefill
    gqa_prefill(out, qkv_row, kcache, vcache, B, 1, NH, NKV, hs, pos, maxT)
