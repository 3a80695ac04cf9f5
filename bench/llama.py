"""A Llama on the CPU, CLLM side by side with transformers and llama.cpp, in one run. Prints ONE JSON line.

  inference  a SmolLM2-135M-shaped model with random weights (30 layers, 576 wide, 9 heads over 3 kv heads,
             MLP 1536, vocab 49152, tied embeddings, rope_theta 100000, context 2048; CLLM's own init, seed 0):
               decode   tokens/s of batch-1 greedy decoding with a KV cache, --new tokens after a --prompt
                        token prompt (the prompt's prefill not timed; each step's argmax is timed)
               prefill  tokens/s of one --prefill token prompt into a fresh KV cache (last row's logits only)
             engines: cllm_f32 (Model), cllm_int8 (cllm/quantize.py's Int8Model, as `generate --quantize
             int8`), transformers (LlamaForCausalLM from export-hf's directory, float32, its default
             attention, its KV cache), llama_cpp_f32 and llama_cpp_q8_0 (llama-cpp-python on export-gguf's
             f32 and q8_0 files; llm.eval with the last row's logits, no sampler); the best of --rounds each.
             first_token: each engine's argmax after the prompt; first_token_agrees: transformers' and
             llama.cpp f32's against cllm_f32's (the same weights, float32: they must agree)
  train      forward + backward + AdamW with gradient clipping on a small llama (6 layers, 384 wide, 6 heads
             over 2 kv heads, MLP 1024, vocab 8192, untied; B=8, T=256): CLLM's Model and cllm/optim.AdamW
             against transformers' LlamaForCausalLM (its own init) and torch.optim.AdamW; the best of --steps
             timed steps after one warm-up, tokens/s, peak RSS of the process (ru_maxrss) and that peak above
             its RSS after imports (the model, its optimizer state and activations)

Each engine's measurements run in a fresh process started by this script, one at a time (peak RSS is per
process, and Numba's and torch's OpenMP runtimes slow each other when loaded together; see bench/step.py),
torch with torch.set_num_threads(2), llama.cpp with n_threads=2 (its KV cache at its default, f16).
On a shared machine compare the ratios.

llama.cpp runs when llama-cpp-python can be imported: installed, or from the directory the environment
variable CLLM_LLAMA_CPP_PYTHON names (as tests/test_gguf.py loads it); export-gguf needs the gguf package.

JSON keys: bench, smoke, machine {cpu, cpu_count, load_avg_start, load_avg_end}, inference {config, prompt_tokens,
new_tokens, prefill_tokens, rounds, cllm_f32, cllm_int8, transformers, llama_cpp_f32, llama_cpp_q8_0,
first_token, first_token_agrees, ratios}, train {config, batch, seq_len, steps, cllm, torch, speed_ratio,
peak_rss_ratio}, not_run, seconds (prepare_error when the export failed). An inference engine's entry is
{decode_tokens_per_s, prefill_tokens_per_s, first_token, peak_rss_gib} (transformers: and attn_implementation;
llama.cpp: and extra_buffer_types, false with a note where its defaults died of SIGILL) or {error}; a training
side's {tokens_per_s, step_ms_min, peak_rss_gib, peak_above_imports_gib} or {error}. ratios are CLLM over the
other engine (above 1: CLLM faster):
decode_f32_vs_llama_cpp, decode_int8_vs_llama_cpp_q8_0, decode_f32_vs_transformers, prefill_f32_vs_transformers,
prefill_f32_vs_llama_cpp, prefill_int8_vs_llama_cpp_q8_0. A side that did not run is null and not_run.SIDE
(transformers, llama_cpp, torch) says why.

Usage: .venv/bin/python bench/llama.py [--new 64] [--prompt 16] [--prefill 512] [--rounds 3] [--steps 3]
           [--batch 8] [--seq-len 256] [--train-layers 6] [--train-embed 384] [--train-heads 6]
           [--train-kv-heads 2] [--train-ffn 1024] [--train-vocab 8192] [--no-torch] [--no-llama-cpp] [--smoke]
  --smoke: a 2-layer, 64-wide model (4 heads over 2 kv heads, vocab 320) for both parts, prompt 8,
           prefill 32, 8 new tokens, B=2, T=32, one round and one step
"""

import os
import sys

# Each side runs with the OpenMP wait policy its users get: CLLM sets PASSIVE on import (unless the
# environment sets a policy), torch keeps libgomp's default. The children get the environment as it
# was before anything of CLLM was imported here.
USER_ENV = dict(os.environ)

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# bench/ itself off the path: bench/kernels.py would hide the `kernels` package transformers imports
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

from bench.common import SMOKE_HELP, cpu_model, missing  # noqa: E402

SMOLLM2_135M = dict(arch="llama", vocab_size=49152, max_seq_len=2048, num_layers=30, num_heads=9, num_kv_heads=3,
                    embed_dim=576, ffn_dim=1536, rope_theta=100000.0, norm_eps=1e-5, tie_embeddings=True)
SMOKE = dict(arch="llama", vocab_size=320, max_seq_len=128, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64,
             ffn_dim=128, rope_theta=100000.0, norm_eps=1e-5, tie_embeddings=True)
LR, BETAS, EPS, WD, CLIP = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0  # bench/step.py's
LLAMA_CPP_CTX, LLAMA_CPP_BATCH, THREADS = 1024, 512, 2
INFERENCE_ENGINES = ("cllm_f32", "cllm_int8", "transformers", "llama_cpp_f32", "llama_cpp_q8_0")


# ------------------------------------------------------------------------------------------ children
# CLLM is imported inside these functions, not at the top: the parent imports only cllm.config (no Numba),
# and a torch child must import torch first (child() below).
def rss_now() -> int:
    """This process's resident set size now, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30, 3)


def tokens(vocab_size: int, n: int, seed: int) -> list[int]:
    """The same token ids in every child: the prompt (seed 1) and the prefill's tokens (seed 2)."""
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab_size, n)]


def synthetic_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer of exactly vocab_size ids: the 256 bytes, two-byte merges, <|endoftext|>.
    export-gguf and export-hf need a tokenizer of the model's vocabulary; which tokens it holds does not change
    the speed (the benchmark feeds token ids), and training a real one of 49152 ids would take minutes."""
    from cllm.tokenizers.bpe import BPETokenizer  # CLLM imported in the children only (see above)

    merges = [(i // 256, i % 256) for i in range(vocab_size - 257)]  # every pair distinct: one new id each
    tok = BPETokenizer(merges)
    assert tok.vocab_size == vocab_size, tok.vocab_size
    return tok


def prepare(sizes: dict, workdir: str, targets: str) -> dict:
    """Write what the other engines load, from CLLM's model (its own init, seed 0): a checkpoint, then
    export-hf's directory (targets has "hf") and export-gguf's f32 and q8_0 files (targets has "gguf")."""
    from cllm import checkpoint as ck  # CLLM imported in the children only (see above)
    from cllm.config import ModelConfig
    from cllm.interop.gguf import export_gguf
    from cllm.interop.hf import export_hf
    from cllm.model import Model

    t0 = time.perf_counter()
    run = os.path.join(workdir, "checkpoint")
    ck.save_checkpoint(run, "step_000000", Model(ModelConfig(**sizes), seed=0),
                       tokenizer=synthetic_tokenizer(sizes["vocab_size"]))
    ck.set_pointer(run, "latest", "step_000000")
    if "hf" in targets:
        export_hf(run, os.path.join(workdir, "hf"))
    if "gguf" in targets:
        for dtype in ("f32", "q8_0"):
            export_gguf(run, os.path.join(workdir, f"model-{dtype}.gguf"), dtype)
    shutil.rmtree(run)
    return {"seconds": round(time.perf_counter() - t0, 1)}


def best_rate(run, rounds: int) -> float:
    """The highest of `rounds` calls of run() (each returns tokens/s)."""
    return max(run() for _ in range(rounds))


def infer_cllm(sizes: dict, int8: bool, a) -> dict:
    from cllm.config import ModelConfig  # CLLM imported in the children only (see above)
    from cllm.model import Model
    from cllm.quantize import Int8Model

    model = Model(ModelConfig(**sizes), seed=0)
    if int8:
        model = Int8Model(model)  # as `generate --quantize int8` builds it; the float model is freed here
    V = sizes["vocab_size"]
    prompt, long = np.array(tokens(V, a.prompt, 1)), np.array(tokens(V, a.prefill, 2))
    model.prefill(prompt[:4], 0, model.new_kv_cache(1))  # loads the compiled kernels (Numba's cache)

    def prefill():
        cache = model.new_kv_cache(1)
        t0 = time.perf_counter()
        model.prefill(long, 0, cache)
        return long.size / (time.perf_counter() - t0)

    first = []

    def decode():
        cache = model.new_kv_cache(1)
        tok = int(np.argmax(model.prefill(prompt, 0, cache)))
        first.append(tok)
        t0 = time.perf_counter()
        for pos in range(prompt.size, prompt.size + a.new):
            tok = int(np.argmax(model.decode_step(tok, pos, cache)[0]))
        return a.new / (time.perf_counter() - t0)

    return {"decode_tokens_per_s": round(best_rate(decode, a.rounds), 2),
            "prefill_tokens_per_s": round(best_rate(prefill, a.rounds), 2), "first_token": first[0]}


def infer_transformers(sizes: dict, workdir: str, a) -> dict:
    import torch  # optional (the interop extra)
    from transformers import LlamaForCausalLM  # optional (the interop extra)

    torch.set_num_threads(THREADS)
    model = LlamaForCausalLM.from_pretrained(os.path.join(workdir, "hf")).float().eval()
    V = sizes["vocab_size"]
    prompt = torch.tensor([tokens(V, a.prompt, 1)])
    long = torch.tensor([tokens(V, a.prefill, 2)])
    first = []

    def prefill():
        t0 = time.perf_counter()
        model(long, use_cache=True, logits_to_keep=1)
        return long.shape[1] / (time.perf_counter() - t0)

    # the KV cache's argument and output field: `cache` from transformers 5.25 on (past_key_values deprecated)
    cache = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def decode():
        out = model(prompt, use_cache=True, logits_to_keep=1)
        past, tok = getattr(out, cache), int(torch.argmax(out.logits[0, -1]))
        first.append(tok)
        t0 = time.perf_counter()
        for _ in range(a.new):
            out = model(torch.tensor([[tok]]), use_cache=True, logits_to_keep=1, **{cache: past})
            past, tok = getattr(out, cache), int(torch.argmax(out.logits[0, -1]))
        return a.new / (time.perf_counter() - t0)

    with torch.inference_mode():
        model(prompt[:, :4], use_cache=True, logits_to_keep=1)  # warm-up
        result = {"decode_tokens_per_s": round(best_rate(decode, a.rounds), 2),
                  "prefill_tokens_per_s": round(best_rate(prefill, a.rounds), 2)}
    return {**result, "first_token": first[0], "attn_implementation": model.config._attn_implementation}


def import_llama_cpp():
    """llama-cpp-python's module: installed, or from the directory CLLM_LLAMA_CPP_PYTHON names."""
    extra = USER_ENV.get("CLLM_LLAMA_CPP_PYTHON")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    import llama_cpp  # optional: built from source outside the repository

    return llama_cpp


def infer_llama_cpp(sizes: dict, workdir: str, dtype: str, a) -> dict:
    llama_cpp = import_llama_cpp()
    if a.no_extra_bufts:
        # llama.cpp's model parameter use_extra_bufts (weight repacking, AMX) has no Llama() argument: its
        # defaults are changed where Llama.__init__ reads them
        defaults = llama_cpp.llama_cpp.llama_model_default_params

        def without_extra_bufts():
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = without_extra_bufts
    llm = llama_cpp.Llama(model_path=os.path.join(workdir, f"model-{dtype}.gguf"), n_threads=THREADS,
                          n_threads_batch=THREADS, n_ctx=LLAMA_CPP_CTX, n_batch=LLAMA_CPP_BATCH, verbose=False)
    V = sizes["vocab_size"]
    prompt, long = tokens(V, a.prompt, 1), tokens(V, a.prefill, 2)

    def next_token() -> int:
        # the last evaluated row's logits (llm.eval asks for that row only; llm.scores holds rows only with
        # logits_all=True, which would compute the LM head for every prefill row); the sampler is not used
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(V,))))

    def prefill():
        llm.reset()  # the next eval drops the KV cache's positions from n_tokens (0) on
        t0 = time.perf_counter()
        llm.eval(long)
        return len(long) / (time.perf_counter() - t0)

    first = []

    def decode():
        llm.reset()
        llm.eval(prompt)
        tok = next_token()
        first.append(tok)
        t0 = time.perf_counter()
        for _ in range(a.new):
            llm.eval([tok])
            tok = next_token()
        return a.new / (time.perf_counter() - t0)

    llm.reset()
    llm.eval(prompt[:4])  # warm-up
    return {"decode_tokens_per_s": round(best_rate(decode, a.rounds), 2),
            "prefill_tokens_per_s": round(best_rate(prefill, a.rounds), 2), "first_token": first[0],
            "extra_buffer_types": not a.no_extra_bufts}


def train_config(a) -> dict:
    if a.smoke:
        return dict(SMOKE, max_seq_len=a.seq_len, tie_embeddings=False)
    return dict(arch="llama", vocab_size=a.train_vocab, max_seq_len=a.seq_len, num_layers=a.train_layers,
                num_heads=a.train_heads, num_kv_heads=a.train_kv_heads, embed_dim=a.train_embed,
                ffn_dim=a.train_ffn, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False)


def timed_steps(step, steps: int) -> float:
    """The shortest of `steps` timed calls of step() after one warm-up call, seconds."""
    step()
    durations = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        durations.append(time.perf_counter() - t0)
    return min(durations)


def train_cllm(sizes: dict, a) -> tuple[float, int]:
    from cllm.config import ModelConfig  # CLLM imported in the children only (see above)
    from cllm.model import Model
    from cllm.optim import AdamW

    base = rss_now()
    model = Model(ModelConfig(**sizes), seed=0)
    opt = AdamW(lr=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS, weight_decay=WD, grad_clip=CLIP)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, sizes["vocab_size"], (a.batch, a.seq_len)).astype(np.int32) for _ in range(2))

    def step():
        model.zero_grad()
        _, loss = model.forward(x, y)
        model.backward()
        opt.step(model, loss=loss)

    return timed_steps(step, a.steps), base


def train_torch(sizes: dict, a) -> tuple[float, int]:
    import torch  # optional (the interop extra)
    from transformers import LlamaConfig, LlamaForCausalLM  # optional (the interop extra)

    from cllm.config import ModelConfig  # CLLM imported in the children only (see above)
    from cllm.interop.hf_llama import llama_hf_config

    torch.set_num_threads(THREADS)
    base = rss_now()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**llama_hf_config(ModelConfig(**sizes), {}))).float().train()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": WD},  # matrices,
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],  # as CLLM's
                            lr=LR, betas=BETAS, eps=EPS)
    rng = np.random.default_rng(0)
    x, y = (torch.tensor(rng.integers(0, sizes["vocab_size"], (a.batch, a.seq_len))) for _ in range(2))

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, sizes["vocab_size"]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()

    return timed_steps(step, a.steps), base


def child(task: str, engine: str, a) -> dict:
    """One engine's measurements in this (fresh) process. torch and transformers are imported before CLLM
    (bench/step.py explains the OpenMP runtimes), and the parent process imports neither."""
    if engine in ("torch", "transformers"):
        import torch  # noqa: F401  (optional: loads torch's OpenMP runtime before CLLM's import)
    sizes = SMOKE if a.smoke else SMOLLM2_135M
    if task == "prepare":
        return prepare(sizes, a.workdir, engine)
    if task == "train":
        sizes = train_config(a)
        seconds, base = (train_cllm if engine == "cllm" else train_torch)(sizes, a)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"tokens_per_s": round(a.batch * a.seq_len / seconds, 2), "step_ms_min": round(seconds * 1e3, 1),
                "peak_rss_gib": round(peak / 2**30, 3), "peak_above_imports_gib": round((peak - base) / 2**30, 3)}
    if engine.startswith("cllm"):
        result = infer_cllm(sizes, engine == "cllm_int8", a)
    elif engine == "transformers":
        result = infer_transformers(sizes, a.workdir, a)
    else:
        result = infer_llama_cpp(sizes, a.workdir, engine[len("llama_cpp_"):], a)
    return {**result, "peak_rss_gib": peak_rss_gib()}


# ------------------------------------------------------------------------------------------ parent
def measure(task: str, engine: str, argv: list[str], workdir: str, extra: tuple = ()) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, *extra, "--child", task, engine, "--workdir", workdir]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=USER_ENV)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode < 0:  # killed by a signal: stderr's last line would be some earlier warning
        return {"error": f"the child process died of {signal.Signals(-out.returncode).name}"}
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(lines[-1])


def measure_llama_cpp(engine: str, argv: list[str], workdir: str) -> dict:
    """llama.cpp with its defaults; where that dies of SIGILL, again without its extra buffer types. A build
    with -march=native on a CPU that reports AMX uses AMX for q8_0 matrices, and on a virtual machine that
    does not enable AMX, the first tile instruction is illegal (measured: q8_0 on this project's 2-core VM)."""
    result = measure("infer", engine, argv, workdir)
    if result.get("error", "").endswith("SIGILL"):
        result = {**measure("infer", engine, argv, workdir, ("--no-extra-bufts",)),
                  "note": f"with its defaults: {result['error']} (AMX); run with use_extra_bufts=false"}
    return result


def llama_cpp_missing() -> str | None:
    """None when llama-cpp-python can be found (without importing it: the children load it), else why not."""
    extra = USER_ENV.get("CLLM_LLAMA_CPP_PYTHON")
    if extra:
        if not os.path.isdir(os.path.join(extra, "llama_cpp")):
            return f"CLLM_LLAMA_CPP_PYTHON={extra!r} is not a directory holding llama_cpp (llama-cpp-python)"
        return missing("gguf", "gguf")  # export-gguf's writer
    if missing("llama_cpp", "gguf") is not None:
        return ("llama-cpp-python is not importable: build it outside the repository (pip install --target DIR "
                "--no-binary :all: llama-cpp-python) and set CLLM_LLAMA_CPP_PYTHON=DIR")
    return missing("gguf", "gguf")


def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    if a and b and key in a and key in b:
        return round(a[key] / b[key], 3)
    return None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A Llama's speed: CLLM against transformers and llama.cpp.")
    p.add_argument("--new", type=positive_int, default=64, help="decoded tokens after the prompt")
    p.add_argument("--prompt", type=positive_int, default=16, help="tokens of the decode's prompt (at least 4)")
    p.add_argument("--prefill", type=positive_int, default=512, help="tokens of the timed prefill")
    p.add_argument("--rounds", type=positive_int, default=3, help="inference: the best of this many")
    p.add_argument("--steps", type=positive_int, default=3, help="training: timed steps after one warm-up")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--seq-len", type=positive_int, default=256)
    p.add_argument("--train-layers", type=positive_int, default=6)
    p.add_argument("--train-embed", type=positive_int, default=384)
    p.add_argument("--train-heads", type=positive_int, default=6)
    p.add_argument("--train-kv-heads", type=positive_int, default=2)
    p.add_argument("--train-ffn", type=positive_int, default=1024)
    p.add_argument("--train-vocab", type=positive_int, default=8192)
    p.add_argument("--no-torch", action="store_true", help="neither transformers nor torch")
    p.add_argument("--no-llama-cpp", action="store_true")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--no-extra-bufts", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.smoke:  # the children get the same argv, --smoke included
        a.new, a.prompt, a.prefill, a.rounds, a.steps, a.batch, a.seq_len = 8, 8, 32, 1, 1, 2, 32
    sizes = SMOKE if a.smoke else SMOLLM2_135M
    if a.prompt < 4 or a.prompt + a.new > sizes["max_seq_len"] or a.prefill > min(sizes["max_seq_len"],
                                                                                   LLAMA_CPP_CTX):
        p.error(f"--prompt must be at least 4, --prompt + --new at most the context ({sizes['max_seq_len']}) and "
                f"--prefill at most {min(sizes['max_seq_len'], LLAMA_CPP_CTX)}")
    if not a.child:
        from cllm.config import ModelConfig  # only here: the children import CLLM themselves
        from cllm.errors import ConfigError

        try:
            ModelConfig(**train_config(a))
        except ConfigError as exc:
            p.error(f"the training model (the --train-* flags): {exc}")
    return a


def main() -> None:
    argv = sys.argv[1:]
    a = parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child, a)))
        return
    t0 = time.time()
    not_run = {}
    if a.no_torch:
        not_run["transformers"] = not_run["torch"] = "not asked for (--no-torch)"
    else:
        why = missing("torch", "interop") or missing("transformers", "interop")
        if why:
            not_run["transformers"] = not_run["torch"] = why
    why = "not asked for (--no-llama-cpp)" if a.no_llama_cpp else llama_cpp_missing()
    if why:
        not_run["llama_cpp"] = why
    sizes = SMOKE if a.smoke else SMOLLM2_135M
    result = {"bench": "llama", "smoke": a.smoke,
              "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_avg_start": list(os.getloadavg())}}
    inf = {"config": sizes, "prompt_tokens": a.prompt, "new_tokens": a.new, "prefill_tokens": a.prefill,
           "rounds": a.rounds}
    workdir = tempfile.mkdtemp(prefix="cllm-bench-llama-")
    try:
        targets = ",".join(t for t, side in (("hf", "transformers"), ("gguf", "llama_cpp")) if side not in not_run)
        prep = measure("prepare", targets, argv, workdir) if targets else {}
        for engine in INFERENCE_ENGINES:
            side = "llama_cpp" if engine.startswith("llama_cpp") else engine
            if side in not_run:
                inf[engine] = None
            elif side in ("transformers", "llama_cpp") and "error" in prep:  # their files were not written
                inf[engine] = {"error": f"exporting the model failed: {prep['error']}"}
            elif side == "llama_cpp":
                inf[engine] = measure_llama_cpp(engine, argv, workdir)
            else:
                inf[engine] = measure("infer", engine, argv, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    inf["first_token"] = {e: inf[e].get("first_token") for e in INFERENCE_ENGINES if inf[e]}
    ref = inf["first_token"].get("cllm_f32")
    inf["first_token_agrees"] = {e: (None if ref is None or inf["first_token"].get(e) is None
                                     else inf["first_token"][e] == ref) for e in ("transformers", "llama_cpp_f32")}
    f32, int8 = inf["cllm_f32"], inf["cllm_int8"]
    inf["ratios"] = {
        "decode_f32_vs_llama_cpp": ratio(f32, inf["llama_cpp_f32"], "decode_tokens_per_s"),
        "decode_int8_vs_llama_cpp_q8_0": ratio(int8, inf["llama_cpp_q8_0"], "decode_tokens_per_s"),
        "decode_f32_vs_transformers": ratio(f32, inf["transformers"], "decode_tokens_per_s"),
        "prefill_f32_vs_transformers": ratio(f32, inf["transformers"], "prefill_tokens_per_s"),
        "prefill_f32_vs_llama_cpp": ratio(f32, inf["llama_cpp_f32"], "prefill_tokens_per_s"),
        "prefill_int8_vs_llama_cpp_q8_0": ratio(int8, inf["llama_cpp_q8_0"], "prefill_tokens_per_s"),
    }
    result["inference"] = inf
    train = {"config": train_config(a), "batch": a.batch, "seq_len": a.seq_len, "steps": a.steps,
             "cllm": measure("train", "cllm", argv, "")}
    train["torch"] = None if "torch" in not_run else measure("train", "torch", argv, "")
    train["speed_ratio"] = ratio(train["cllm"], train["torch"], "tokens_per_s")
    train["peak_rss_ratio"] = ratio(train["cllm"], train["torch"], "peak_rss_gib")
    result["train"] = train
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    if "error" in prep:
        result["prepare_error"] = prep["error"]
    if not_run:
        result["not_run"] = not_run
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
