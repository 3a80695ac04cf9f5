"""What `pip install .` puts on sys.path: the one name `cllm`, so that CLLM installs beside any other project.

CLLM once installed a top-level package `kernels` and a module `cli`. HuggingFace's PyPI package `kernels` is a
dependency of transformers 5, so the two overwrote each other in site-packages, and from a checkout CLLM's folder
shadowed HuggingFace's (`import transformers` failed). tests/test_hf_interop.py imports transformers from the
repository root; this test builds the wheel and reads its top-level names."""
import shutil
import subprocess
import sys
import zipfile

from train_helpers import ROOT


def _checkout_copy(dest):
    """The files a clone has (tracked, or new and not ignored), copied: building in place would leave build/ and
    *.egg-info in the checkout."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


def test_the_wheel_installs_only_the_cllm_package(tmp_path):
    src = tmp_path / "src"
    _checkout_copy(src)
    # --no-build-isolation: the test extra installs setuptools, so the build needs no download
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("cllm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"cllm", wheel.name.split("-py3")[0] + ".dist-info"}, sorted(top)
    assert "cllm/kernels/matmul.py" in names and "cllm/cli.py" in names
    # the `cllm` script runs the same main() as `python cli.py`
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "cllm = cllm.cli:main" in entry


def test_the_checkout_has_no_other_importable_top_level_name():
    """From the repository root (where `python cli.py` runs) only `cllm` and the entry script are importable: a
    folder with an __init__.py or a stray module there would shadow an installed package of the same name."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == {"cllm"}, packages
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert modules == {"cli"}, modules  # cli.py imports cllm.cli; nothing imports `cli`
