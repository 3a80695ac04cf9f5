"""Numba helper for imported byte-level BPE: put whole-vocabulary chunks into the encoder's cache.

tiktoken (and HuggingFace's BPE with `ignore_merges`) looks a whole pre-split chunk up in the
vocabulary first and uses its id when it is there, merging only chunks that are not tokens. The
BPE encoder (bpe_kernels.bpe_encode_text) consults its chunk cache before merging, so entering every
vocabulary token that is valid text as a cached chunk gives exactly that rule at no cost per chunk.
"""
import numpy as np
from numba import njit

from cllm.tokenizers.bpe_kernels import chunk_key
from kernels._common import JIT


@njit(**JIT)
def seed_chunk_cache(cache, cstate, cache_cps, cache_ids, ent, cps, offsets, ids):
    """Enter token t (code points cps[offsets[t]:offsets[t+1]], id ids[t]) as a cached chunk whose
    ids are [ids[t]], for every t, in the layout bpe_encode_text reads (see its docstring).
    cps (M,) uint32, offsets (K+1,) int64, ids (K,) int32; the pools must have room for all.
    Returns the number of tokens entered (a 64-bit key already present keeps its first entry)."""
    k = 0
    for t in range(ids.shape[0]):
        s, e = offsets[t], offsets[t + 1]
        key = chunk_key(cps, s, e)
        if key in cache:
            continue
        ne, cu, iu = cstate[0], cstate[1], cstate[2]
        for j in range(e - s):
            cache_cps[cu + j] = cps[s + j]
        cache_ids[iu] = ids[t]
        ent[ne, 0] = cu
        ent[ne, 1] = e - s
        ent[ne, 2] = iu
        ent[ne, 3] = 1
        cache[key] = ne
        cstate[0] = ne + 1
        cstate[1] = cu + (e - s)
        cstate[2] = iu + 1
        k += 1
    return k


def empty_pools(n_tokens: int, n_cps: int):
    """(cps pool, ids pool, entries) sized for the seeds plus room to grow."""
    return (np.empty(n_cps + (1 << 16), np.uint32), np.empty(n_tokens + (1 << 16), np.int32),
            np.empty((n_tokens + (1 << 12), 4), np.int64))
