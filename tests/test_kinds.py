"""The registry of dataset kinds (cllm/kinds.py): which kind an input or a model is, and that the data layer
reaches vision only through it."""
import subprocess
import sys
from pathlib import Path

from cllm import kinds
from cllm.tokenizers import CharTokenizer
from cllm.vision.tokenizer import ImageTokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_in_kinds_register_on_the_first_lookup():
    assert kinds.names() == ["text", "image", "chat"]
    text, image = kinds.get("text"), kinds.get("image")
    assert image.tokenizers == {"image": ImageTokenizer} and "char" in text.tokenizers
    assert image.sample_pngs is not None and text.sample_pngs is None  # what the server offers


def test_an_input_is_the_kind_that_recognises_it(tmp_path):
    assert kinds.for_input(ROOT / "data" / "digits" / "train").name == "image"
    assert kinds.for_input(ROOT / "data").name == "text"  # its images lie three levels down
    assert kinds.for_input(ROOT / "data" / "digits" / "train", "char").name == "image"  # the train default
    (tmp_path / "notes.txt").write_text("hello")
    assert kinds.for_input(tmp_path / "notes.txt").name == "text"
    assert kinds.for_input(tmp_path / "notes.txt", "image").name == "image"  # named: vision refuses it
    assert kinds.claimed_folder(str(ROOT / "data" / "digits")) == "image"
    assert kinds.claimed_folder(str(ROOT / "data")) is None


def test_a_model_is_the_kind_of_its_tokenizer():
    assert kinds.for_tokenizer(CharTokenizer.train("abc")).name == "text"
    tok = ImageTokenizer(2, 2, [[0, 0, 0], [255, 255, 255]])
    assert kinds.for_tokenizer(tok).name == "image"
    assert kinds.for_tokenizer(tok).align(tok) == tok.record_len


def test_the_data_layer_imports_no_vision_until_a_lookup():
    code = ("import sys, cllm.data, cllm.training, cllm.evaluate, cllm.serve; "
            "assert not [m for m in sys.modules if m.startswith('cllm.vision')], 'vision loaded'; "
            "from cllm import kinds; kinds.get('image'); assert 'cllm.vision.kind' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
