"""GPU speed: CLLM's CUDA model (cllm/device.py, cllm/kernels/cuda) against the same model in PyTorch CUDA
(eager), in one run. Prints ONE JSON line; without a usable GPU it prints one line saying so and exits 1.

  training   tokens/s of forward + backward + AdamW (global-norm clipping) over a (B,T) batch, at the
             medium config (L6 NH8 C256 T128 B32 V5000) and at GPT-2 small's size (L12 NH12 C768
             T1024 B8 V50257)
  generation tokens/s of batch-1 greedy decoding with a KV cache: 256 new tokens after a 64-token
             prompt (prefilled, not timed); the logits come back to the host every token in both
  MFU        model FLOPs/s (bench/step.py's counts) over the GPU's float32 peak (--peak-tflops, or
             a table of known GPUs; none for an unknown one). Neither side uses TF32.
  ratios     CLLM / PyTorch, measured in turns in this process (the best of --rounds each)

JSON keys: bench, device, smoke, peak_fp32_tflops, cublas, torch (its version, or null with not_run.torch saying
why), configs {NAME: {B, T, train_tokens_per_s, generate_tokens_per_s, train_mfu, generate_mfu, and with torch:
torch_train_tokens_per_s, torch_generate_tokens_per_s, train_ratio, generate_ratio, torch_train_mfu}} (the
MFUs are null without a known peak).

Usage: .venv/bin/python bench/gpu.py [--configs medium,gpt2] [--seconds 5] [--rounds 2] [--no-torch] [--smoke]
(needs `pip install -e '.[cuda]'`, and torch built for CUDA for the comparison; nvmath-python makes
CLLM's matrix products cuBLAS's). Not run yet: the machine this was written on has no GPU.
  --smoke: this script's code paths on the CPU, in Numba's CUDA simulator (GPU or not): the tiny config,
  no timed seconds, one round, 4 tokens after a 4-token prompt, torch (if installed) on the CPU
"""
import argparse
import json
import os
import sys
import time

if "--smoke" in sys.argv[1:]:
    # the simulator must be switched on before numba is first imported (tests/test_cuda_sim.py does the same)
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    sys.setswitchinterval(1e-5)  # the simulator's block manager polls its threads at every barrier

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench.step as S  # noqa: E402  (PROMPT and NEW are read from it when used: --smoke shortens them)
from bench.common import SMOKE_HELP, missing  # noqa: E402
from bench.step import (  # noqa: E402
    BETAS,
    CLIP,
    EPS,
    LR,
    WD,
    best_rates,
    gen_config,
    gen_flops,
    timed_loop,
    torch_model,
    train_flops_per_token,
)
from cllm.config import ModelConfig  # noqa: E402
from cllm.errors import CLLMError  # noqa: E402
from cllm.model import MATRIX_PARAMS, Model  # noqa: E402

CONFIGS = {
    "medium": {"cfg": ModelConfig(vocab_size=5000, max_seq_len=128, num_layers=6, num_heads=8, embed_dim=256),
             "B": 32, "T": 128},
    "gpt2": {"cfg": ModelConfig(vocab_size=50257, max_seq_len=1024, num_layers=12, num_heads=12, embed_dim=768),
             "B": 8, "T": 1024},
    # --smoke's, in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): a test of this script, not a benchmark
    "tiny": {"cfg": ModelConfig(vocab_size=11, max_seq_len=8, num_layers=1, num_heads=2, embed_dim=8), "B": 1, "T": 4},
}
# float32 (not TF32) peak FLOP/s of known GPUs, by a piece of the device's name
PEAK_FP32 = {"H200": 67e12, "H100": 67e12, "A100": 19.5e12, "L40S": 91.6e12, "L4": 30.3e12, "A10": 31.2e12,
             "V100": 15.7e12, "T4": 8.1e12}


def cllm_train(cfg, B, T, rng):
    from cllm.device import CudaAdamW, to_device  # only once the GPU is chosen: it imports numba.cuda

    model = to_device(Model(cfg, seed=0), "cuda")
    opt = CudaAdamW(lr=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS, weight_decay=WD, grad_clip=CLIP)
    x = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32)
    y = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32)

    def step():
        model.zero_grad()
        loss = model.loss(x, y)  # no logits copied to the host
        model.backward()
        opt.step(model, loss=loss)

    step()  # compiles the kernels
    return step


def cllm_generate(cfg, prompt):
    from cllm.device import to_device  # as in cllm_train

    model = to_device(Model(gen_config(cfg), seed=0), "cuda")

    def run():
        cache = model.new_kv_cache(1)
        logits = model.prefill(prompt, 0, cache)
        tok = int(np.argmax(logits))
        t0 = time.perf_counter()
        for pos in range(S.PROMPT, S.PROMPT + S.NEW - 1):
            tok = int(np.argmax(model.decode_step(tok, pos, cache)[0]))
        return (S.NEW - 1) / (time.perf_counter() - t0)

    run()
    return run


def torch_train(torch, cfg, B, T, rng, device):
    F = torch.nn.functional
    P, forward, _, _ = torch_model(torch, cfg)
    for name in P:  # the closures read P[name] at call time
        P[name] = torch.nn.Parameter(P[name].detach().to(device))
    opt = torch.optim.AdamW(
        [{"params": [P[n] for n in P if n in MATRIX_PARAMS], "weight_decay": WD},
         {"params": [P[n] for n in P if n not in MATRIX_PARAMS], "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS)
    params = list(P.values())
    x = torch.tensor(rng.integers(0, cfg.vocab_size, (B, T)), dtype=torch.long, device=device)
    y = torch.tensor(rng.integers(0, cfg.vocab_size, (B, T)), dtype=torch.long, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x).reshape(-1, cfg.vocab_size), y.reshape(-1))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        loss.detach().item(), norm.item()  # what CLLM's loop reads back each step

    step()
    return step


def torch_generate(torch, cfg, prompt, device):
    gcfg = gen_config(cfg)
    P, _, decode, _ = torch_model(torch, gcfg)
    for name in P:
        P[name] = torch.nn.Parameter(P[name].detach().to(device))
    L, NH, C, maxT = gcfg.num_layers, gcfg.num_heads, gcfg.embed_dim, gcfg.max_seq_len

    def run():
        with torch.inference_mode():
            cache = [(torch.zeros(NH, maxT, C // NH, device=device), torch.zeros(NH, maxT, C // NH, device=device))
                     for _ in range(L)]
            for pos in range(S.PROMPT):
                logits = decode(int(prompt[pos]), pos, cache)
            tok = int(torch.argmax(logits))
            t0 = time.perf_counter()
            for pos in range(S.PROMPT, S.PROMPT + S.NEW - 1):
                tok = int(torch.argmax(decode(tok, pos, cache)))
            return (S.NEW - 1) / (time.perf_counter() - t0)

    run()
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="medium,gpt2")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-device", default="cuda", help="cpu only to smoke-test this script without a GPU")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's float32 peak (default: by its name)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.configs, args.seconds, args.rounds, args.torch_device = "tiny", 0.0, 1, "cpu"
        S.set_generation_length(4, 4)
    for cname in args.configs.split(","):
        if cname not in CONFIGS:
            ap.error(f"unknown config {cname!r}: choose from {', '.join(CONFIGS)}")
    try:
        from cllm.device import select_gpu  # imports numba.cuda: after --smoke has chosen the simulator

        select_gpu("cuda")
    except CLLMError as exc:
        print(f"bench/gpu.py: {exc}", file=sys.stderr)
        return 1
    from numba import cuda  # as select_gpu's module: after --smoke has chosen the simulator

    name = getattr(cuda.get_current_device(), "name", "the CUDA simulator")  # the simulator's device has none
    name = name.decode() if isinstance(name, bytes) else str(name)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK_FP32.items() if k in name), None)
    torch = None
    no_torch = "not asked for (--no-torch)" if args.no_torch else missing("torch", "interop")
    if not no_torch:
        import torch  # optional, and seconds to import
    from cllm.kernels.cuda import cublas  # as cllm.device

    result = {"bench": "gpu", "device": name, "smoke": args.smoke, "peak_fp32_tflops": peak and peak / 1e12,
              "cublas": cublas.available(), "torch": torch and torch.__version__, "configs": {}}
    if no_torch:
        result["not_run"] = {"torch": no_torch}
    rng = np.random.default_rng(0)
    for cname in args.configs.split(","):
        spec = CONFIGS[cname]
        cfg, B, T = spec["cfg"], spec["B"], spec["T"]
        prompt = rng.integers(0, cfg.vocab_size, S.PROMPT).astype(np.int32)
        # every timed step ends by reading the loss and the gradient norm back: nothing is left queued
        cstep = cllm_train(cfg, B, T, rng)
        iters = 1 if args.smoke else 2  # timed steps at least (the simulator takes seconds a step)
        runs = {"cllm_train": lambda s=cstep: timed_loop(s, args.seconds, iters),
                "cllm_generate": cllm_generate(cfg, prompt)}
        if torch is not None:
            tstep = torch_train(torch, cfg, B, T, rng, args.torch_device)
            runs["torch_train"] = lambda s=tstep: timed_loop(s, args.seconds, iters)
            runs["torch_generate"] = torch_generate(torch, cfg, prompt, args.torch_device)
        rates = best_rates(runs, args.rounds)
        out = {"B": B, "T": T, "train_tokens_per_s": rates["cllm_train"] * B * T,
               "generate_tokens_per_s": rates["cllm_generate"]}
        flops_train = train_flops_per_token(cfg, T) * out["train_tokens_per_s"]
        out["train_mfu"] = peak and flops_train / peak
        if torch is not None:
            out["torch_train_tokens_per_s"] = rates["torch_train"] * B * T
            out["torch_generate_tokens_per_s"] = rates["torch_generate"]
            out["train_ratio"] = out["train_tokens_per_s"] / out["torch_train_tokens_per_s"]
            out["generate_ratio"] = out["generate_tokens_per_s"] / out["torch_generate_tokens_per_s"]
            out["torch_train_mfu"] = peak and train_flops_per_token(cfg, T) * out["torch_train_tokens_per_s"] / peak
        gen_per_token = gen_flops(gen_config(cfg), S.PROMPT, S.NEW - 1) / (S.NEW - 1)
        out["generate_mfu"] = peak and gen_per_token * out["generate_tokens_per_s"] / peak
        result["configs"][cname] = out
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
