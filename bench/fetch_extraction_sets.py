"""Fetch the two extra main-text extraction benchmarks that bench/extraction.py scores besides Scrapinghub's.

    python bench/fetch_extraction_sets.py [--dest DIR] [--trafilatura-repo URL_OR_GIT_DIR]
                                          [--readability-repo URL_OR_GIT_DIR]

Their pages are third-party web pages, so they stay out of this repository: this script puts them under
DIR (default ../shared/bench/extraction, beside the Scrapinghub set), each set in its own folder with a
SOURCE.md naming the repository, the pinned commit and the licence:
- trafilatura/: trafilatura's evaluation set (github.com/adbar/trafilatura, Apache-2.0): tests/evaldata.json
  (per page, snippets that must be in the extracted text and snippets that must not) and the pages it names,
  tests/eval/*.html and tests/cache/*.html (990 pages, many non-English: forums, shops, recipes, blogs).
- readability/: Mozilla Readability's test pages (github.com/mozilla/readability, Apache-2.0):
  test/test-pages/NAME/source.html and expected.html (the main content as HTML), 130 pages.
A repository may be a URL (needs git and network) or a local git directory holding the pinned commit (a
mirror). Only the files named above are copied, out of the pinned commit (git fetch + git archive).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DEST = os.path.join(ROOT, "..", "shared", "bench", "extraction")

# name: (repository, pinned commit, paths to copy, licence line)
SETS = {
    "trafilatura": ("https://github.com/adbar/trafilatura", "e90b0ef51ab026fdb905fb6c5b3c84dd3d784fd5",
                    ["tests/evaldata.json", "tests/eval", "tests/cache"],
                    "Apache-2.0 (LICENSE of the repository); the pages belong to their sites"),
    "readability": ("https://github.com/mozilla/readability", "ab4027a8b37669745016869a37a504727992b2ba",
                    ["test/test-pages"],
                    "Apache-2.0 (LICENSE.md of the repository); the pages belong to their sites"),
}


def git(*args: str, cwd: str | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch_set(name: str, repo: str, dest_root: str) -> str:
    url, commit, paths, licence = SETS[name]
    source = repo or url
    dest = os.path.join(dest_root, name)
    with tempfile.TemporaryDirectory(prefix="cllm-fetch-") as tmp:
        bare = os.path.join(tmp, "repo.git")
        git("init", "-q", "--bare", bare)
        # only the pinned commit, without history (a local mirror serves it the same way)
        git("--git-dir", bare, "fetch", "-q", "--depth", "1", os.path.abspath(source) if os.path.isdir(source)
            else source, commit)
        archive = os.path.join(tmp, "files.tar")
        git("--git-dir", bare, "archive", "-o", archive, commit, *paths)
        staging = os.path.join(tmp, "out")
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        shutil.copytree(staging, dest)
    with open(os.path.join(dest, "SOURCE.md"), "w", encoding="utf-8") as f:
        f.write(f"# {name} main-text extraction set (data only)\n\n- Source: {url}\n- Commit: {commit}\n"
                f"- Copied: {', '.join(paths)}\n- Licence: {licence}\n- Fetched by bench/fetch_extraction_sets.py; "
                "scored by bench/extraction.py --set " + name + "\n")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=DEFAULT_DEST, help="where the set folders go (default: %(default)s)")
    ap.add_argument("--trafilatura-repo", default="", help="URL or local git directory (default: GitHub)")
    ap.add_argument("--readability-repo", default="", help="URL or local git directory (default: GitHub)")
    ap.add_argument("--set", choices=[*SETS, "all"], default="all")
    args = ap.parse_args()
    if shutil.which("git") is None:
        sys.exit("bench/fetch_extraction_sets.py: git is not installed")
    repos = {"trafilatura": args.trafilatura_repo, "readability": args.readability_repo}
    for name in SETS if args.set == "all" else [args.set]:
        try:
            print(f"{name}: {fetch_set(name, repos[name], args.dest)}")
        except subprocess.CalledProcessError as err:
            sys.exit(f"bench/fetch_extraction_sets.py: fetching {name} failed ({err}); is the network or the "
                     "local git directory there, and does it hold the pinned commit?")


if __name__ == "__main__":
    main()
