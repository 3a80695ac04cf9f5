"""Every script under bench/ runs in its --smoke mode (its smallest sizes, the same code paths) and prints
the JSON line its docstring documents, with sane values: a benchmark cannot break unnoticed.

Each script runs as a subprocess, as a user runs it. A reference side whose package is not installed
(torch, trafilatura, scikit-learn: not in the test extra) must be null with not_run saying why; the
checks cover whichever sides ran. OMP_WAIT_POLICY=PASSIVE: torch's spinning OpenMP threads (libgomp's
default) make its side many times slower on a loaded machine, and the smoke runs measure nothing.
"""
import json
import math
import os
import subprocess
import sys

import pytest
from train_helpers import ROOT

BENCH = ROOT / "bench"
# bench/common.py is shared code and bench/fetch_extraction_sets.py a download, not benchmarks
HELPERS = {"common", "fetch_extraction_sets"}


def run_smoke(script: str) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--smoke"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(lines[-1])  # scripts that print a line per seed or evaluation: the last
    assert out["bench"] == script and out["smoke"] is True, out
    return out


def ran(out: dict, side: str) -> bool:
    """Whether the reference side ran: not_run says why not, and then its key (where it has one) is null."""
    if out.get("not_run", {}).get(side):
        assert out.get(side) is None, out
        return False
    return True


def positive(*values) -> None:
    for v in values:
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, values


def ratio_of(ratio: float, a: float, b: float, rel: float = 0.03) -> None:
    """ratio is a / b (both rounded for the JSON: a few percent of slack)."""
    assert ratio == pytest.approx(a / b, rel=rel, abs=0.01), (ratio, a, b)


def check_step(out):
    c = out["configs"]["tiny"]
    positive(c["train_tok_s"], c["gen_tok_s"], c["gen_int8_tok_s"], c["train_step_ms_min"], c["train_mfu"])
    ratio_of(c["int8_gen_ratio"], c["gen_int8_tok_s"], c["gen_tok_s"])
    assert all(math.isfinite(loss) for loss in c["loss_first_last"])
    mem = out["memory"]["tiny"]
    assert mem["numba"]["peak_rss_mib"] > mem["numba"]["above_imports_mib"] > 0
    if ran(out, "torch"):
        positive(c["torch_train_tok_s"], c["torch_gen_tok_s"])
        ratio_of(c["train_ratio"], c["train_tok_s"], c["torch_train_tok_s"])
        ratio_of(c["gen_ratio"], c["gen_tok_s"], c["torch_gen_tok_s"])
        ratio_of(mem["peak_ratio"], mem["numba"]["peak_rss_mib"], mem["torch"]["peak_rss_mib"])


def check_gpt2(out):
    train, gen = out["train"]["T=32"], out["generate"]
    for row in (train["cllm"], gen["cllm"]):
        assert "error" not in row, row  # a child process failed
        positive(row["tokens_per_s"], row["peak_above_imports_gib"])
        assert row["peak_rss_gib"] > row["peak_above_imports_gib"]
    assert out["largest_T_cllm_estimate"] > 0
    if ran(out, "torch"):
        positive(train["torch"]["tokens_per_s"], gen["torch"]["tokens_per_s"])
        ratio_of(train["speed_ratio"], train["cllm"]["tokens_per_s"], train["torch"]["tokens_per_s"])
        ratio_of(train["peak_rss_ratio"], train["cllm"]["peak_rss_gib"], train["torch"]["peak_rss_gib"])
        ratio_of(gen["speed_ratio"], gen["cllm"]["tokens_per_s"], gen["torch"]["tokens_per_s"])


def check_gpu(out):
    assert out["device"] == "the CUDA simulator"  # --smoke runs on the CPU, GPU or not
    c = out["configs"]["tiny"]
    positive(c["train_tokens_per_s"], c["generate_tokens_per_s"])
    if ran(out, "torch"):
        ratio_of(c["train_ratio"], c["train_tokens_per_s"], c["torch_train_tokens_per_s"])
        ratio_of(c["generate_ratio"], c["generate_tokens_per_s"], c["torch_generate_tokens_per_s"])


def check_kernels(out):
    for pair in (*out["error_model"].values(), *out["fused_gelu"].values()):
        positive(pair["chosen_us"], pair["alternative_us"])
        ratio_of(pair["ratio"], pair["alternative_us"], pair["chosen_us"], rel=0.05)
    assert set(out["fused_gelu"]) == {"baby", "medium"}


def check_mpi(out):
    one, two = out["one_process_two_threads"], out["two_processes_one_thread"]
    assert (one["processes"], two["processes"]) == (1, 2)
    positive(one["tokens_per_sec"], two["tokens_per_sec"], two["allreduce_ms"], two["allreduce_bytes"])
    assert one["allreduce_bytes"] == two["allreduce_bytes"]  # the same model's gradients
    ratio_of(out["ratio_two_processes"], two["tokens_per_sec"], one["tokens_per_sec"])
    assert 0 < out["allreduce_share_of_step"] <= 1


def check_scaling(out):
    for key, axis in (("step_vs_T", "T"), ("step_vs_C", "C"), ("decode_ms_vs_pos", "pos")):
        points = out[key]
        assert len(points) >= 2 and points[0]["cost_per_flop"] == 1.0
        for p in points:
            positive(p["ms"], p["gflop"], p["cost_per_flop"])
        assert [p[axis] for p in points] == sorted(p[axis] for p in points)


def check_coldstart(out):
    assert out["wall_s_median"] >= out["wall_s_best"] > 0
    positive(*out["split_s"].values())
    assert set(out["split_s"]) == {"imports", "model_load", "cache_load", "first_token"}


def check_serve(out):
    assert out["errors"] == 0, out["error_samples"]
    positive(out["req_per_s"], out["tokens_per_s"], out["reference_tokens_per_s"], out["latency_p50_s"])
    assert out["latency_p99_s"] >= out["latency_p50_s"] and out["health_probes"] >= 1
    ratio_of(out["server_vs_reference"], out["tokens_per_s"], out["reference_tokens_per_s"])


def check_crawl(out):
    assert out["kept"] == out["written"] == out["site_pages"] and out["errors"] == 0
    positive(out["pages_per_s"], out["text_mb"], out["peak_rss_mb"])


def check_prepare(out):
    assert set(out["kinds"]) == {"char", "word", "bpe"}
    for kind, r in out["kinds"].items():
        assert "error" not in r, (kind, r)
        positive(r["MBps"], r["train_tokens"], r["val_tokens"], r["vocab_size"], r["peak_rss_MB"])
    assert out["kinds"]["bpe"]["vocab_size"] == 300
    mem = out["memory"]  # cli.py prepare's peak RSS on two crawls
    assert 0.1 <= mem["runs"][0]["corpus_MB"] < mem["runs"][1]["corpus_MB"] and all(r["tokens"] for r in mem["runs"])
    positive(mem["baseline_peak_rss_MB"], *(r["peak_rss_MB"] for r in mem["runs"]))


def check_tokenizer(out):
    positive(out["encode_MBps"], out["encode_cached_MBps"], out["bpe_train_s"], out["baseline"]["speedup"])
    if ran(out, "tiktoken"):
        t = out["tiktoken"]
        assert t["identical_ids"] is True
        ratio_of(t["ratio"], out["encode_MBps"], t["MBps"], rel=0.05)
        ratio_of(t["ratio_cached"], out["encode_cached_MBps"], t["MBps"], rel=0.05)
    if ran(out, "hf_tokenizers"):
        assert out["hf_tokenizers"]["identical_ids"] is True
        ratio_of(out["hf_tokenizers"]["ratio"], out["encode_MBps"], out["hf_tokenizers"]["MBps"], rel=0.05)
        w = out["wordpiece"]["encode"]
        assert w["identical_ids"] is True
        ratio_of(w["ratio"], w["MBps"], w["hf_MBps"], rel=0.05)
    if ran(out, "rank_file"):
        r = out["rank_file"]
        assert r["identical_ids"] is True
        positive(r["MBps"], r["tiktoken_MBps"])
        ratio_of(r["ratio"], r["MBps"], r["tiktoken_MBps"], rel=0.05)


def check_extraction(out):
    # every set's reader ran on generated pages in that set's own layout
    assert set(out["sets"]) == {"scrapinghub", "trafilatura", "readability"}
    for name, row in out["sets"].items():
        assert row["pages"] == 6 and row["metric"] == ("snippets" if name == "trafilatura" else "shingles")
        sides = ["cllm", "plain_lxml_body"] + (["trafilatura"] if ran(out, "trafilatura") else [])
        for side in sides:
            s = row[side]
            assert all(0 <= s[k] <= 1 for k in ("precision", "recall", "f1", "accuracy")), (name, s)
            if s["precision"] + s["recall"]:
                assert s["f1"] == pytest.approx(2 * s["precision"] * s["recall"] / (s["precision"] + s["recall"]),
                                                abs=2e-4)
        # the generated pages' navigation, related links and footer are boilerplate CLLM must drop
        assert row["cllm"]["f1"] > row["plain_lxml_body"]["f1"] and row["cllm"]["precision"] > 0.9, (name, row)


def check_nanogpt_reference(out):
    if ran(out, "torch"):
        for key in ("val_loss_20_batches", "val_loss_whole_split"):
            assert 0 < out[key] < math.log(65) + 1  # near a uniform guess over 65 characters after 5 steps


def check_shakespeare_parity(out):
    positive(out["cllm_val"])
    if ran(out, "torch"):
        # the same weights and batches: the two engines' losses agree to float32 round-off
        assert abs(out["diff"]) < 1e-3 and out["torch_val"] == pytest.approx(out["cllm_val"], abs=1e-3)
        assert out["max_weight_diff"] < 1e-4


def check_optimizer(out):
    assert set(out["results"]) == {"gpt2/adamw", "gpt2/muon", "llama/adamw", "llama/muon"}
    for r in out["results"].values():
        positive(r["fwd_bwd_ms"], r["step_ms"])
        # the times are rounded to 0.001 ms (the smoke's steps take a few thousandths): the share, computed before
        # rounding, lies between the ratios of the rounded times' extremes
        f, s, h = r["fwd_bwd_ms"], r["step_ms"], 0.0005
        low, high = max(s - h, 0) / (f + h + max(s - h, 0)), (s + h) / (max(f - h, 0) + s + h)
        assert low - 1e-4 <= r["share"] <= high + 1e-4


def check_ema_gain(out):
    assert out["seq_len"] == 16 and [tuple(b) for b in out["buckets"]] == [(0, 1), (1, 4), (4, 16)]
    for side in ("average", "online"):
        positive(out[side]["loss"], *out[side]["per_bucket"])
    # the mean over the window's 16 positions from the buckets' means (1, 3 and 12 positions)
    for side in ("average", "online"):
        b = out[side]["per_bucket"]
        assert out[side]["loss"] == pytest.approx((b[0] + 3 * b[1] + 12 * b[2]) / 16, abs=1e-3)
    assert out["average"]["loss"] != out["online"]["loss"]


def check_recipe(out):
    assert out["screened"] == 1 and len(out["confirmed"]) == 1
    positive(out["confirmed"][0]["val_loss"], out["confirmed"][0]["tokens"])


def check_vision(out):
    positive(out["bits_per_dim"], out["histogram_per_position_bits_per_dim"], out["png_tiled_bits_per_pixel"])
    assert out["bits_per_dim_joint"] >= out["bits_per_dim"] - 1e-9  # the class summed out never scores worse
    assert 0 <= out["accuracy"] <= 1
    assert sum(map(sum, out["confusion_matrix"])) == out["test_images"]
    keys = ("accuracy_logistic_regression", "accuracy_knn_1", "accuracy_knn_5")
    if ran(out, "sklearn"):
        assert all(0 <= out[k] <= 1 for k in keys)
    else:
        assert all(out[k] is None for k in keys)


def check_chat_tasks(out):
    assert set(out["tasks"]) == {"add", "compare", "reverse", "spell", "count"}
    for t in out["tasks"].values():
        assert t["n"] == 3 and 0 <= t["correct"] <= t["n"] and t["exact_match"] == round(t["correct"] / t["n"], 4)


def check_gqa(out):
    assert out["threads"] >= 1 and set(out["sizes"]) == {"gqa (B,T,NH,NKV,hs)", "decode (B,NH,NKV,hs)", "maxT"}
    if ran(out, "vs_torch"):
        for name in ("forward", "forward_backward", "decode_step"):
            c = out["vs_torch"][name]
            positive(c["cllm_us"], c["torch_us"])
            ratio_of(c["ratio"], c["torch_us"], c["cllm_us"])


def check_llama_ops(out):
    for op in ("rmsnorm", "rope", "swiglu"):
        for part in ("forward", "backward"):
            c = out[op][part]
            positive(c["cllm_us"])
            if ran(out, "torch"):
                positive(c["torch_us"])
                ratio_of(c["ratio"], c["torch_us"], c["cllm_us"])
    positive(out["fused_matmul_swiglu"]["fused_us"], out["fused_matmul_swiglu"]["separate_us"])


def check_llama(out):
    assert out["machine"]["cpu_count"] >= 1 and len(out["machine"]["load_avg_end"]) == 3
    inf, ratios, vocab = out["inference"], out["inference"]["ratios"], out["inference"]["config"]["vocab_size"]
    sides = {"transformers": ("transformers",), "llama_cpp": ("llama_cpp_f32", "llama_cpp_q8_0")}
    engines = ["cllm_f32", "cllm_int8"]
    for side, entries in sides.items():
        if ran(out, side):
            engines += entries
        else:
            assert all(inf[e] is None for e in entries), inf
    for e in engines:
        assert "error" not in inf[e], (e, inf[e])  # a child process failed
        positive(inf[e]["decode_tokens_per_s"], inf[e]["prefill_tokens_per_s"], inf[e]["peak_rss_gib"])
        assert 0 <= inf[e]["first_token"] < vocab and inf["first_token"][e] == inf[e]["first_token"]
    if ran(out, "transformers"):  # the same float32 weights: the same first token
        assert inf["first_token_agrees"]["transformers"] is True
        ratio_of(ratios["decode_f32_vs_transformers"], inf["cllm_f32"]["decode_tokens_per_s"],
                 inf["transformers"]["decode_tokens_per_s"])
        ratio_of(ratios["prefill_f32_vs_transformers"], inf["cllm_f32"]["prefill_tokens_per_s"],
                 inf["transformers"]["prefill_tokens_per_s"])
    else:
        assert ratios["decode_f32_vs_transformers"] is None
    if ran(out, "llama_cpp"):
        assert inf["first_token_agrees"]["llama_cpp_f32"] is True
        ratio_of(ratios["decode_f32_vs_llama_cpp"], inf["cllm_f32"]["decode_tokens_per_s"],
                 inf["llama_cpp_f32"]["decode_tokens_per_s"])
        ratio_of(ratios["decode_int8_vs_llama_cpp_q8_0"], inf["cllm_int8"]["decode_tokens_per_s"],
                 inf["llama_cpp_q8_0"]["decode_tokens_per_s"])
    train = out["train"]
    for side in ["cllm"] + (["torch"] if ran(out, "torch") else []):
        row = train[side]
        assert "error" not in row, (side, row)
        positive(row["tokens_per_s"], row["step_ms_min"], row["peak_above_imports_gib"])
        assert row["peak_rss_gib"] > row["peak_above_imports_gib"]
    if ran(out, "torch"):
        ratio_of(train["speed_ratio"], train["cllm"]["tokens_per_s"], train["torch"]["tokens_per_s"])
        ratio_of(train["peak_rss_ratio"], train["cllm"]["peak_rss_gib"], train["torch"]["peak_rss_gib"])
    else:
        assert train["torch"] is None and train["speed_ratio"] is None


def check_structured(out):
    for row in out["vocabularies"].values():  # --smoke measures llguidance only
        positive(row["cllm_us"], row["min_tokens"], row["llguidance"]["mask_us"], row["llguidance"]["compile_s"])
        assert row["min_tokens"] < row["tokens"]


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


def test_every_bench_script_has_a_smoke_check():
    scripts = {p.stem for p in BENCH.glob("*.py")} - HELPERS
    assert scripts == set(CHECKS)


@pytest.mark.parametrize("script", sorted(CHECKS))
def test_smoke(script):
    CHECKS[script](run_smoke(script))
