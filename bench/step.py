"""Training and generation speed of the Numba engine, against an identical PyTorch model when torch
is installed. Prints ONE JSON line with every config, or with --per-config one JSON line per config.

  training   tokens/s of forward + backward + AdamW (global-norm clipping) over a (B,T) batch
  generation tokens/s of batch-1 greedy decoding with a KV cache (model.decode_step): 256 new
             tokens after a 64-token prompt; the generation model gets max_seq_len 320 so that
             the baby config (block 64) can hold them
  int8       tokens/s of the same decoding with the weight matrices in int8 (cllm/quantize.py's
             Int8Model, quantized from the same float model), and its ratio to the float32 decode
  memory     peak RSS of a process that builds the model and runs one training step (ru_maxrss),
             and that peak above the process's RSS after its imports, for each engine and each
             config of --memory-configs (default medium and GPT-2 small at B=4, T=256), each in a
             fresh process of its own (RSS peaks are per process)
  MFU        model FLOPs/s over PEAK_FLOPS; training FLOPs = 6 N tokens + attention (12 L C T
             per token, nanoGPT/PaLM), generation = 2 N + 4 L C ctx per token; N counts the
             parameters but the padded vocabulary rows
  best step  train_step_ms_min: the shortest single CLLM training step of the timed rounds, and
             train_mfu_best_step, its MFU (on a shared machine the rates move with other load;
             the shortest step moves less)
  ratios     numba / torch, measured by this script in turns (the best of --rounds each); torch
             runs in a worker process that this script starts (torch.set_num_threads(2)): loaded
             into one process, Numba's and torch's two OpenMP runtimes slow whichever starts
             second by 2 to 4x (measured), which would make any ratio an artifact

Configs: baby (nanoGPT's CPU Shakespeare model: L4 NH4 C128 T64 B12 V65), medium (L6 NH8 C256 T128 B32
V5000), gpt2 (GPT-2 small at B=4, T=256), tiny (L2 NH2 C64 T32 B2 V500: --smoke's).

JSON keys (one line): bench, smoke, threads, peak_flops, python, torch (its version, or null with not_run.torch
saying why), configs {NAME: {sizes, params, train_tok_s, gen_tok_s, train_mfu, train_step_ms_min,
train_mfu_best_step, gen_mfu, gen_int8_tok_s, int8_gen_ratio, loss_first_last, loadavg_1min, and with torch:
torch_train_tok_s, torch_gen_tok_s, torch_train_mfu, train_ratio, gen_ratio}}, memory {NAME: {numba, torch
({peak_rss_mib, above_imports_mib} or {error}), peak_ratio, sizes}}.

Usage: .venv/bin/python bench/step.py [--configs baby,medium] [--seconds 3] [--rounds 3] [--no-torch] [--per-config]
                                     [--memory-configs medium,gpt2 | --memory-configs none] [--smoke]
  --smoke: --configs tiny --memory-configs tiny --seconds 0 --rounds 1, 16 new tokens after an 8-token prompt
"""

import os
import sys

# Each side runs with the OpenMP wait policy its users get: CLLM sets PASSIVE on import (unless the
# environment sets a policy), torch keeps libgomp's default. The torch worker is started with the
# environment as it was before CLLM was imported.
USER_ENV = dict(os.environ)
if "--torch-worker" in sys.argv[1:] or sys.argv[1:3] == ["--memory-child", "torch"]:
    import torch  # noqa: F401,E402  (loads torch's OpenMP runtime before CLLM's import sets its policy)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import SMOKE_HELP, missing  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.model import MATRIX_PARAMS, Model  # noqa: E402
from cllm.optim import AdamW  # noqa: E402
from cllm.quantize import Int8Model  # noqa: E402
from cllm.runtime import configure_threads  # noqa: E402

PEAK_FLOPS = 195e9  # the 2-core machine's float32 peak, FLOP/s
THREADS = 2
PROMPT, NEW = 64, 256
CONFIGS = {
    "baby": dict(cfg=ModelConfig(vocab_size=65, max_seq_len=64, num_layers=4, num_heads=4, embed_dim=128), B=12, T=64),
    # the size of the C program CLLM started from
    "medium": dict(
        cfg=ModelConfig(vocab_size=5000, max_seq_len=128, num_layers=6, num_heads=8, embed_dim=256), B=32, T=128
    ),
    # GPT-2 small (124M): ~25 s a training step here, so by default only in --memory-configs
    "gpt2": dict(
        cfg=ModelConfig(vocab_size=50257, max_seq_len=1024, num_layers=12, num_heads=12, embed_dim=768), B=4, T=256
    ),
    # --smoke's: every code path in well under a second of work
    "tiny": dict(cfg=ModelConfig(vocab_size=500, max_seq_len=32, num_layers=2, num_heads=2, embed_dim=64), B=2, T=32),
}
SMOKE_ARGS = ["--configs", "tiny", "--memory-configs", "tiny", "--seconds", "0", "--rounds", "1"]
LR, BETAS, EPS, WD, CLIP = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0


def real_params(cfg):
    return cfg.num_parameters() - (cfg.padded_vocab_size - cfg.vocab_size) * cfg.embed_dim


def train_flops_per_token(cfg, T):
    return 6 * real_params(cfg) + 12 * cfg.num_layers * cfg.embed_dim * T


def gen_flops(cfg, start, n):
    # tokens at positions start .. start+n-1, each attending over pos+1 keys
    return sum(2 * real_params(cfg) + 4 * cfg.num_layers * cfg.embed_dim * (p + 1) for p in range(start, start + n))


def timed_loop(step, seconds, min_iters=2):
    """Steps per second of step() over at least `seconds` and min_iters calls."""
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if n >= min_iters and dt >= seconds:
            return n / dt


def best_rates(runs, rounds):
    """Calls each of runs (name -> function returning a rate) in turn, `rounds` times, and keeps
    each one's best rate: on a shared machine the best of interleaved runs compares fairly."""
    best = {name: 0.0 for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], run())
    return best


def set_generation_length(prompt: int, new: int) -> None:
    """--smoke's shorter generation: the loops and gen_config read PROMPT and NEW when they run."""
    global PROMPT, NEW
    PROMPT, NEW = prompt, new


def gen_config(cfg):
    return ModelConfig(
        vocab_size=cfg.vocab_size,
        max_seq_len=max(cfg.max_seq_len, PROMPT + NEW),
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        embed_dim=cfg.embed_dim,
    )


# ------------------------------------------------------------------ Numba engine
def numba_train(cfg, B, T, rng):
    """A training step closure (forward + backward + AdamW), the list of its losses and the list of
    the timed steps' durations (seconds)."""
    model = Model(cfg, seed=0)
    opt = AdamW(lr=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS, weight_decay=WD, grad_clip=CLIP)
    x = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32)
    y = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32)
    losses, durations = [], []

    def step():
        t0 = time.perf_counter()
        model.zero_grad()
        _, loss = model.forward(x, y)
        model.backward()
        opt.step(model, loss=loss)
        durations.append(time.perf_counter() - t0)
        losses.append(loss)

    step()  # compiles / warms up
    durations.clear()
    return step, losses, durations


def numba_generate(cfg, prompt, int8=False):
    """A closure that generates NEW tokens greedily after the prompt and returns tokens/s; int8: from
    the same model's int8 weights."""
    model = Model(gen_config(cfg), seed=0)
    if int8:
        model = Int8Model(model)

    def run():
        cache = model.new_kv_cache(1)
        for pos in range(PROMPT - 1):  # prefill (not timed)
            model.decode_step(prompt[pos], pos, cache)
        tok = prompt[PROMPT - 1]
        t0 = time.perf_counter()
        for pos in range(PROMPT - 1, PROMPT - 1 + NEW):
            logits = model.decode_step(tok, pos, cache)
            tok = int(np.argmax(logits[0]))
        return NEW / (time.perf_counter() - t0)

    return run


# ------------------------------------------------------------------ PyTorch, the same model
def torch_model(torch, cfg):
    F = torch.nn.functional
    V, Vp, L, NH, C, maxT = (
        cfg.vocab_size,
        cfg.padded_vocab_size,
        cfg.num_layers,
        cfg.num_heads,
        cfg.embed_dim,
        cfg.max_seq_len,
    )
    hs = C // NH
    g = torch.Generator().manual_seed(0)

    def normal(*shape, std=0.02):
        return torch.nn.Parameter(torch.randn(*shape, generator=g) * std)

    P = {
        "wte": normal(Vp, C),
        "wpe": normal(maxT, C),
        "ln1w": torch.nn.Parameter(torch.ones(L, C)),
        "ln1b": torch.nn.Parameter(torch.zeros(L, C)),
        "qkvw": normal(L, 3 * C, C),
        "qkvb": torch.nn.Parameter(torch.zeros(L, 3 * C)),
        "attprojw": normal(L, C, C, std=0.02 / math.sqrt(2 * L)),
        "attprojb": torch.nn.Parameter(torch.zeros(L, C)),
        "ln2w": torch.nn.Parameter(torch.ones(L, C)),
        "ln2b": torch.nn.Parameter(torch.zeros(L, C)),
        "fcw": normal(L, 4 * C, C),
        "fcb": torch.nn.Parameter(torch.zeros(L, 4 * C)),
        "fcprojw": normal(L, C, 4 * C, std=0.02 / math.sqrt(2 * L)),
        "fcprojb": torch.nn.Parameter(torch.zeros(L, C)),
        "lnfw": torch.nn.Parameter(torch.ones(C)),
        "lnfb": torch.nn.Parameter(torch.zeros(C)),
    }

    def forward(idx):
        B, T = idx.shape
        x = P["wte"][idx] + P["wpe"][:T]
        for l in range(L):
            h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l])
            q, k, v = F.linear(h, P["qkvw"][l], P["qkvb"][l]).split(C, dim=-1)
            q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), P["attprojw"][l], P["attprojb"][l])
            h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l])
            h = F.gelu(F.linear(h, P["fcw"][l], P["fcb"][l]), approximate="tanh")
            x = x + F.linear(h, P["fcprojw"][l], P["fcprojb"][l])
        x = F.layer_norm(x, (C,), P["lnfw"], P["lnfb"])
        return x @ P["wte"][:V].T

    def decode(tok, pos, cache):
        # one token (batch 1) at position pos; cache[l] = (K, V) of shape (NH, maxT, hs)
        x = P["wte"][tok] + P["wpe"][pos]
        for l in range(L):
            h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l])
            q, k, v = F.linear(h, P["qkvw"][l], P["qkvb"][l]).view(3, NH, hs).unbind(0)
            Kc, Vc = cache[l]
            Kc[:, pos] = k
            Vc[:, pos] = v
            att = torch.softmax((Kc[:, : pos + 1] @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(hs), dim=-1)
            y = (att.unsqueeze(1) @ Vc[:, : pos + 1]).reshape(C)
            x = x + F.linear(y, P["attprojw"][l], P["attprojb"][l])
            h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l])
            x = x + F.linear(
                F.gelu(F.linear(h, P["fcw"][l], P["fcb"][l]), approximate="tanh"), P["fcprojw"][l], P["fcprojb"][l]
            )
        return F.layer_norm(x, (C,), P["lnfw"], P["lnfb"]) @ P["wte"][:V].T

    def new_cache():
        return [(torch.zeros(NH, maxT, hs), torch.zeros(NH, maxT, hs)) for _ in range(L)]

    return P, forward, decode, new_cache


def torch_train(torch, cfg, B, T, rng):
    F = torch.nn.functional
    P, forward, _, _ = torch_model(torch, cfg)
    opt = torch.optim.AdamW(
        [
            {"params": [P[n] for n in P if n in MATRIX_PARAMS], "weight_decay": WD},
            {"params": [P[n] for n in P if n not in MATRIX_PARAMS], "weight_decay": 0.0},
        ],
        lr=LR,
        betas=BETAS,
        eps=EPS,
    )
    params = list(P.values())
    x = torch.tensor(rng.integers(0, cfg.vocab_size, (B, T)), dtype=torch.long)
    y = torch.tensor(rng.integers(0, cfg.vocab_size, (B, T)), dtype=torch.long)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x).reshape(-1, cfg.vocab_size), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()

    step()
    return step


def torch_generate(torch, cfg, prompt):
    _, _, decode, new_cache = torch_model(torch, gen_config(cfg))

    def run():
        with torch.inference_mode():
            cache = new_cache()
            for pos in range(PROMPT - 1):
                decode(int(prompt[pos]), pos, cache)
            tok = int(prompt[PROMPT - 1])
            t0 = time.perf_counter()
            for pos in range(PROMPT - 1, PROMPT - 1 + NEW):
                tok = int(torch.argmax(decode(tok, pos, cache)))
            return NEW / (time.perf_counter() - t0)

    return run


def rss_now() -> int:
    """This process's resident set size now, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(engine: str, name: str) -> dict:
    """In a fresh process: build the model of config `name`, run one training step (the first
    allocates every buffer: activations, their gradients, AdamW's moments) and report the peak RSS."""
    if engine == "torch":
        import torch  # optional (the interop extra): only the torch side's processes import it

        torch.set_num_threads(THREADS)
    else:
        configure_threads(THREADS)
    spec = CONFIGS[name]
    rng = np.random.default_rng(0)
    base = rss_now()
    if engine == "torch":
        torch_train(torch, spec["cfg"], spec["B"], spec["T"], rng)  # runs one step
    else:
        numba_train(spec["cfg"], spec["B"], spec["T"], rng)  # runs one step
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_rss_mib": round(peak / 2**20, 1), "above_imports_mib": round((peak - base) / 2**20, 1)}


def measure_memory(name: str, engines: list[str]) -> dict:
    """Peak RSS of one training step of config `name` for each engine, each in its own process."""
    out = {}
    for engine in engines:
        env = USER_ENV if engine == "torch" else None
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", engine, name],
                              capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            out[engine] = {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
        else:
            out[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    if all("peak_rss_mib" in out.get(e, {}) for e in ("numba", "torch")):
        out["peak_ratio"] = round(out["numba"]["peak_rss_mib"] / out["torch"]["peak_rss_mib"], 3)
    spec = CONFIGS[name]
    cfg = spec["cfg"]
    out["sizes"] = dict(L=cfg.num_layers, NH=cfg.num_heads, C=cfg.embed_dim, V=cfg.vocab_size, B=spec["B"], T=spec["T"])
    return out


def torch_worker():
    """Serves measurements over stdin/stdout: 'train NAME SECONDS' or 'gen NAME 0' -> tokens/s."""
    import torch  # optional (the interop extra): only the torch side's processes import it

    torch.set_num_threads(THREADS)
    print(torch.__version__, flush=True)
    runs = {}
    for line in sys.stdin:
        kind, name, seconds = line.split()
        if (kind, name) not in runs:
            spec = CONFIGS[name]
            cfg, B, T = spec["cfg"], spec["B"], spec["T"]
            rng = np.random.default_rng(0)
            prompt = rng.integers(0, cfg.vocab_size, PROMPT).astype(np.int32)
            if kind == "train":
                tstep = torch_train(torch, cfg, B, T, rng)
                runs[kind, name] = lambda s, tstep=tstep, n=B * T: n * timed_loop(tstep, s)
            else:
                gen = torch_generate(torch, cfg, prompt)
                runs[kind, name] = lambda s, gen=gen: gen()
        print(runs[kind, name](float(seconds)), flush=True)


class TorchWorker:
    def __init__(self, smoke: bool):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--torch-worker"] + (["--smoke"] if smoke else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=USER_ENV,
        )
        self.version = self.proc.stdout.readline().strip()

    def rate(self, kind, name, seconds=0.0):
        self.proc.stdin.write(f"{kind} {name} {seconds}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="baby,medium", help="configs timed ('none': memory only)")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per training measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurements per engine (the best counts)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--per-config", action="store_true", help="one JSON line per config instead of one in all")
    ap.add_argument("--memory-configs", default="medium,gpt2",
                    help="configs whose peak RSS is measured ('none': no memory)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args = ap.parse_args(sys.argv[1:] + SMOKE_ARGS)
        set_generation_length(8, 16)
    for name in (args.configs + "," + args.memory_configs).split(","):
        if name != "none" and name not in CONFIGS:
            ap.error(f"unknown config {name!r}: choose from {', '.join(CONFIGS)} or none")
    if args.torch_worker:
        return torch_worker()
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return

    torch = None
    no_torch = "not asked for (--no-torch)" if args.no_torch else missing("torch", "interop")
    if not no_torch:
        torch = TorchWorker(args.smoke)  # started before Numba's threads exist
    threads = configure_threads(THREADS)

    common = {
        "bench": "step",
        "smoke": args.smoke,
        "threads": threads,
        "peak_flops": PEAK_FLOPS,
        "python": platform.python_version(),
        "torch": torch.version if torch else None,
    }
    if no_torch:
        common["not_run"] = {"torch": no_torch}
    results = {}
    for name in [c for c in args.configs.split(",") if c != "none"]:
        load_before = os.getloadavg()[0]
        spec = CONFIGS[name]
        cfg, B, T = spec["cfg"], spec["B"], spec["T"]
        rng = np.random.default_rng(0)
        prompt = rng.integers(0, cfg.vocab_size, PROMPT).astype(np.int32)
        nstep, losses, durations = numba_train(cfg, B, T, rng)
        train = {"numba": lambda: B * T * timed_loop(nstep, args.seconds)}
        gen = {"numba": numba_generate(cfg, prompt), "numba_int8": numba_generate(cfg, prompt, int8=True)}
        if torch is not None:
            train["torch"] = lambda: torch.rate("train", name, args.seconds)
            gen["torch"] = lambda: torch.rate("gen", name)
            train["torch"](), gen["torch"]()  # build and warm up
        train, gen = best_rates(train, args.rounds), best_rates(gen, args.rounds)
        train_tps, gen_tps = train["numba"], gen["numba"]
        r = dict(common, config=name)
        r.update(
            {
                "sizes": dict(L=cfg.num_layers, NH=cfg.num_heads, C=cfg.embed_dim, V=cfg.vocab_size, B=B, T=T),
                "params": real_params(cfg),
                "train_tok_s": round(train_tps, 1),
                "gen_tok_s": round(gen_tps, 1),
                "train_mfu": round(train_tps * train_flops_per_token(cfg, T) / PEAK_FLOPS, 4),
                # the shortest single step of the timed rounds, and its MFU: less moved by other load on
                # the machine than the rates above (a step either met a disturbance or not)
                "train_step_ms_min": round(min(durations) * 1e3, 2),
                "train_mfu_best_step": round(B * T * train_flops_per_token(cfg, T) / min(durations) / PEAK_FLOPS, 4),
                "gen_mfu": round(gen_tps * gen_flops(gen_config(cfg), PROMPT - 1, NEW) / NEW / PEAK_FLOPS, 4),
                "gen_int8_tok_s": round(gen["numba_int8"], 1),
                "int8_gen_ratio": round(gen["numba_int8"] / gen_tps, 3),
                "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
            }
        )
        if torch is not None:
            t_train, t_gen = train["torch"], gen["torch"]
            r.update(
                {
                    "torch_train_tok_s": round(t_train, 1),
                    "torch_gen_tok_s": round(t_gen, 1),
                    "torch_train_mfu": round(t_train * train_flops_per_token(cfg, T) / PEAK_FLOPS, 4),
                    "train_ratio": round(train_tps / t_train, 3),
                    "gen_ratio": round(gen_tps / t_gen, 3),
                }
            )
        # other processes on the machine distort every figure: say how busy it was
        r["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        if args.per_config:
            print(json.dumps(r), flush=True)
        else:
            results[name] = {k: v for k, v in r.items() if k not in common and k != "config"}
    if torch is not None:
        torch.close()
    engines = ["numba"] + (["torch"] if torch is not None else [])
    memory = {name: measure_memory(name, engines) for name in args.memory_configs.split(",") if name != "none"}
    if not args.per_config:
        print(json.dumps(dict(common, configs=results, memory=memory)))
    elif memory:
        print(json.dumps(dict(common, memory=memory)))


if __name__ == "__main__":
    main()
