"""bench/recipe.py's grid: variants crossed with the grid, the train command each point runs, and names
that keep the first sweep's points (bench/results/recipe-points.jsonl) found by name."""
import json

import pytest
from train_helpers import ROOT

import bench.recipe as recipe


def args(*extra):
    return recipe.parse_args(["--sizes", "4x4x192", "--contexts", "128", "--batches", "16", "--lrs", "2e-3",
                              "--dropouts", "0.1", "--beta2s", "0.999", "--weight-decays", "0", *extra])


def test_variants_cross_the_grid_and_reach_the_command():
    a = args("--variants", "gpt2=;llama=--arch llama --ffn-dim 512")
    points = recipe.grid(a)
    assert len(points) == 2 and "variant" not in points[0] and points[1]["variant"] == "llama"
    cmd = recipe.train_command("DATA", points[1], 300, "RUN", a, threads=1)
    assert cmd[-4:] == ["--arch", "llama", "--ffn-dim", "512"] and cmd[cmd.index("--threads") + 1] == "1"
    assert "--variant" not in cmd and "--flags" not in cmd
    names = [recipe.point_name(p, 300, 1) for p in points]
    assert names[0].endswith("-300s-t1") and "-vllama-" in names[1] and len(set(names)) == 2


def test_a_seed_other_than_the_default_names_the_point_and_reaches_the_command_once():
    # two seeds of one point are two runs: their names (and so their checkpoint folders) must differ
    default, other = recipe.grid(args()), recipe.grid(args("--seed", "2"))
    assert recipe.point_name(other[0], 1800) != recipe.point_name(default[0], 1800)
    assert "-s2-" in recipe.point_name(other[0], 1800)
    cmd = recipe.train_command("DATA", other[0], 1800, "RUN", args("--seed", "2"))
    assert cmd.count("--seed") == 1 and cmd[cmd.index("--seed") + 1] == "2"


def test_batch_tokens_pairs_each_context_with_its_batch():
    # contexts compared at the same tokens per step: not the cross product of --contexts and --batches
    points = recipe.grid(args("--contexts", "128,256,512", "--batch-tokens", "2048"))
    assert [(p["seq_len"], p["batch_size"]) for p in points] == [(128, 16), (256, 8), (512, 4)]
    assert len(recipe.grid(args("--contexts", "128,256", "--batches", "8,16"))) == 4


def test_the_first_sweeps_points_keep_their_names():
    # every point already in the results file is found again by the name the grid now gives it
    with open(ROOT / "bench" / "results" / "recipe-points.jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    old = [r for r in records if not r["name"].endswith("-t1") and "-v" not in r["name"]]
    assert old
    for r in old:
        assert recipe.point_name(r["config"], r["budget_s"]) == r["name"]


@pytest.mark.parametrize("bad", ["llama", "=--arch llama", "a=1;;b"])  # no '=', no name, a part without '='
def test_a_malformed_variant_is_one_error(bad):
    with pytest.raises(SystemExit, match="NAME=FLAGS"):
        recipe.variants(bad)
