"""llm.c interoperability: export-llmc / import-llmc against llm.c's fp32 model file format as
train_gpt2.c reads it, written out here independently of cllm/interop/llmc.py."""

import json
import os
import struct

import numpy as np
import pytest
from train_helpers import (
    all_threads_after,  # noqa: F401  (autouse)
    assert_clean_error,
    run_cli,
    trained_checkpoint,
)

import cllm.commands.llmc as llmc_cmd
from cllm import checkpoint as ck
from cllm.commands import run_command
from cllm.config import ModelConfig
from cllm.errors import CheckpointError
from cllm.interop.llmc import export_checkpoint, import_model_file, read_model_file
from cllm.model import Model
from cllm.tokenizers import train_tokenizer

# llm.c train_gpt2.c: int model_header[256]; magic, version, maxT, V, L, NH, C, Vp
MAGIC, VERSION = 20240326, 3


def llmc_layout(maxT, V, L, NH, C, Vp):
    """(name, shape) of every parameter tensor in the order of llm.c's ParameterTensors."""
    return [
        ("wte", (Vp, C)),
        ("wpe", (maxT, C)),
        ("ln1w", (L, C)),
        ("ln1b", (L, C)),
        ("qkvw", (L, 3 * C, C)),
        ("qkvb", (L, 3 * C)),
        ("attprojw", (L, C, C)),
        ("attprojb", (L, C)),
        ("ln2w", (L, C)),
        ("ln2b", (L, C)),
        ("fcw", (L, 4 * C, C)),
        ("fcb", (L, 4 * C)),
        ("fcprojw", (L, C, 4 * C)),
        ("fcprojb", (L, C)),
        ("lnfw", (C,)),
        ("lnfb", (C,)),
    ]


def read_llmc(path):
    """An llm.c-style reader: header ints and the named float32 tensors."""
    raw = open(path, "rb").read()
    header = struct.unpack("<256i", raw[:1024])
    maxT, V, L, NH, C = header[2:7]
    Vp = header[7] if header[1] == 3 else V
    floats = np.frombuffer(raw[1024:], dtype="<f4")
    tensors, offset = {}, 0
    for name, shape in llmc_layout(maxT, V, L, NH, C, Vp):
        n = int(np.prod(shape))
        tensors[name] = floats[offset : offset + n].reshape(shape)
        offset += n
    assert offset == floats.size, "the file holds more or fewer floats than its header says"
    return header, tensors


def write_llmc(path, header_values, floats):
    header = list(header_values) + [0] * (256 - len(header_values))
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(np.asarray(floats, dtype="<f4").tobytes())


CFG = ModelConfig(vocab_size=37, max_seq_len=12, num_layers=2, num_heads=4, embed_dim=16)


@pytest.fixture
def saved_model(tmp_path):
    model = Model(CFG, seed=11)
    rng = np.random.default_rng(0)
    model.params[:] += rng.normal(0, 0.05, model.params.size).astype(np.float32)  # no zero biases or unit gains
    model.p["wte"][CFG.vocab_size * CFG.embed_dim :] = 0  # padded rows stay zero, as llm.c writes them
    ck.save_checkpoint(str(tmp_path / "run"), "step_000005", model)
    ck.set_pointer(str(tmp_path / "run"), "latest", "step_000005")
    return model, tmp_path / "run"


def test_export_writes_llmc_header_and_parameter_order(saved_model, tmp_path):
    model, run = saved_model
    out = tmp_path / "model.bin"
    export_checkpoint(str(run), str(out))
    header, tensors = read_llmc(out)
    assert header[:8] == (MAGIC, VERSION, 12, 37, 2, 4, 16, 64)
    assert set(header[8:]) == {0}
    C, L, Vp, maxT = 16, 2, 64, 12
    P = Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C  # GPT-2's parameter count
    assert os.path.getsize(out) == 1024 + 4 * P
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(tensor, model.tensor(name), err_msg=name)
    # the model's flat parameter buffer is llm.c's order, so the file's body is that buffer
    np.testing.assert_array_equal(np.fromfile(out, dtype="<f4", offset=1024), model.params)


def test_round_trip_gives_identical_logits(saved_model, tmp_path):
    model, run = saved_model
    out = tmp_path / "model.bin"
    export_checkpoint(str(run), str(out))
    path = import_model_file(str(out), str(tmp_path / "imported"))
    assert os.path.realpath(tmp_path / "imported" / "latest") == os.path.realpath(path)
    loaded = ck.load_checkpoint(str(tmp_path / "imported"))
    assert loaded.model_config == CFG
    again = ck.model_from_checkpoint(loaded)
    np.testing.assert_array_equal(again.params, model.params)
    idx = np.random.default_rng(1).integers(0, CFG.vocab_size, size=(3, 12))
    np.testing.assert_array_equal(np.array(again.forward(idx)), np.array(model.forward(idx)))
    # and a second export of the import is byte for byte the first file
    export_checkpoint(str(tmp_path / "imported"), str(tmp_path / "again.bin"))
    assert (tmp_path / "again.bin").read_bytes() == out.read_bytes()


def test_import_a_file_written_to_the_spec(tmp_path):
    maxT, V, L, NH, C, Vp = 8, 50, 1, 2, 8, 64
    n = sum(int(np.prod(s)) for _, s in llmc_layout(maxT, V, L, NH, C, Vp))
    floats = np.random.default_rng(2).normal(0, 0.1, n).astype(np.float32)
    write_llmc(tmp_path / "gpt.bin", [MAGIC, 3, maxT, V, L, NH, C, Vp], floats)
    import_model_file(str(tmp_path / "gpt.bin"), str(tmp_path / "ck"))
    loaded = ck.load_checkpoint(str(tmp_path / "ck"))
    assert loaded.model_config == ModelConfig(
        vocab_size=V, max_seq_len=maxT, num_layers=L, num_heads=NH, embed_dim=C, padded_vocab_size=Vp
    )
    _, spec = read_llmc(tmp_path / "gpt.bin")
    for name, tensor in spec.items():
        np.testing.assert_array_equal(loaded.params[name], tensor, err_msg=name)


def test_version_1_has_an_unpadded_vocabulary(tmp_path):
    maxT, V, L, NH, C = 8, 50, 1, 2, 8
    n = sum(int(np.prod(s)) for _, s in llmc_layout(maxT, V, L, NH, C, V))
    floats = np.random.default_rng(3).normal(0, 0.1, n).astype(np.float32)
    write_llmc(tmp_path / "v1.bin", [MAGIC, 1, maxT, V, L, NH, C], floats)
    m = read_model_file(str(tmp_path / "v1.bin"))
    assert m.config.padded_vocab_size == V and m.config.vocab_size == V
    np.testing.assert_array_equal(m.named_tensors()["wte"], floats[: V * C].reshape(V, C))
    model = ck.model_from_checkpoint(
        ck.load_checkpoint(import_model_file(str(tmp_path / "v1.bin"), str(tmp_path / "ck")))
    )
    np.testing.assert_array_equal(model.params, floats)


def _good_file(tmp_path):
    maxT, V, L, NH, C, Vp = 8, 50, 1, 2, 8, 64
    n = sum(int(np.prod(s)) for _, s in llmc_layout(maxT, V, L, NH, C, Vp))
    path = tmp_path / "good.bin"
    write_llmc(path, [MAGIC, 3, maxT, V, L, NH, C, Vp], np.zeros(n, np.float32))
    return path, n


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated", "truncated"),
        ("trailing", "longer than its header"),
        ("short", "shorter than llm.c's 1024-byte header"),
        ("magic", "magic number"),
        ("bf16", "version 5"),
        ("version2", "version 2"),
        ("negative", "impossible sizes"),
        ("vp_small", "padded_vocab_size"),
        ("heads", "divisible"),
        ("nan", "non-finite"),
        ("absent", "no llm.c model file"),
    ],
)
def test_bad_model_files_are_refused(tmp_path, damage, message):
    path, n = _good_file(tmp_path)
    raw = bytearray(path.read_bytes())
    header = list(struct.unpack("<256i", raw[:1024]))
    if damage == "truncated":
        raw = raw[:-4]
    elif damage == "trailing":
        raw += b"\0" * 8
    elif damage == "short":
        raw = raw[:100]
    elif damage == "magic":
        header[0] = 20240520  # llm.c's token file magic: a token file given as a model
    elif damage == "bf16":
        header[1] = 5
    elif damage == "version2":
        header[1] = 2
    elif damage == "negative":
        header[4] = -1
    elif damage == "vp_small":
        header[7] = 10
    elif damage == "heads":
        header[5] = 3
    elif damage == "nan":
        raw[1024 + 40 : 1024 + 44] = struct.pack("<f", float("nan"))
    if damage in ("magic", "bf16", "version2", "negative", "vp_small", "heads"):
        raw[:1024] = struct.pack("<256i", *header)
    path.write_bytes(bytes(raw))
    if damage == "absent":
        path.unlink()
    with pytest.raises(CheckpointError, match=message):
        import_model_file(str(path), str(tmp_path / "ck"))
    assert not (tmp_path / "ck").exists() or not os.listdir(tmp_path / "ck")


def test_export_to_an_unwritable_path(saved_model, tmp_path):
    _, run = saved_model
    for out in (tmp_path / "no-such-dir" / "model.bin", tmp_path):  # a missing folder; a directory
        with pytest.raises(CheckpointError, match="cannot write"):
            export_checkpoint(str(run), str(out))
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no temporary left behind


def test_tokenizer_must_match_the_vocabulary(tmp_path):
    path, _ = _good_file(tmp_path)
    tok = train_tokenizer("char", "abc", progress=False)
    tok.save(str(tmp_path / "tok.json"))
    with pytest.raises(CheckpointError, match="tokens but the model"):
        import_model_file(str(path), str(tmp_path / "ck"), str(tmp_path / "tok.json"))


def test_import_refuses_to_overwrite_a_run(saved_model, tmp_path):
    _, run = saved_model
    path, _ = _good_file(tmp_path)
    with pytest.raises(CheckpointError, match="already holds a run"):
        import_model_file(str(path), str(run))
    assert os.readlink(run / "latest") == "step_000005"


def test_commands_round_trip_with_tokenizer_and_generate(tmp_path, tmp_path_factory, capsys):
    run = trained_checkpoint(tmp_path_factory)
    out = tmp_path / "model.bin"
    assert run_command(llmc_cmd, "export-llmc", [str(run), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    header, _ = read_llmc(out)
    assert header[:2] == (MAGIC, VERSION)
    tokenizer = os.path.join(os.path.realpath(run / "latest"), "tokenizer.json")
    assert run_command(llmc_cmd, "import-llmc", [str(out), str(tmp_path / "imported"), "--tokenizer", tokenizer]) == 0
    capsys.readouterr()
    assert json.load(open(tmp_path / "imported" / "latest" / "tokenizer.json")) == json.load(open(tokenizer))
    # the imported checkpoint writes what the original writes
    args = ["the ", "--temperature", "0", "--max-new-tokens", "15"]
    r1 = run_cli("generate", *args, "--checkpoint", run)
    r2 = run_cli("generate", *args, "--checkpoint", tmp_path / "imported")
    assert r1.returncode == r2.returncode == 0, r1.stderr + r2.stderr
    assert r1.stdout == r2.stdout and len(r1.stdout) == len("the ") + 15 + 1


def test_cli_errors_are_one_line(tmp_path):
    path, _ = _good_file(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    assert_clean_error(run_cli("import-llmc", path, tmp_path / "ck"), "truncated")
    assert_clean_error(run_cli("export-llmc", tmp_path / "no-such-run", tmp_path / "out.bin"), "no checkpoint")
    assert_clean_error(run_cli("import-llmc", tmp_path / "missing.bin", tmp_path / "ck"), "no llm.c model file")
    assert_clean_error(run_cli("import-llmc", path, tmp_path / "ck", "--frobnicate"), "unknown flag")
