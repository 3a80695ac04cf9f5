"""Main-text extraction quality on the Scrapinghub article-extraction benchmark.

    python bench/extraction.py [--data DIR] [--limit N] [--worst K] [--no-trafilatura] [--smoke]

Scores `cllm.scraper.extract.extract_html` with the benchmark's own metric (its evaluate.py, as
summarised in the data folder's SOURCE.md): \\w+ tokens, multisets of 4-token shingles, per-page
TP/FP/FN normalised to sum 1, macro-averaged precision and recall, F1 = their harmonic mean,
accuracy = exact token-list match. Plain lxml body text is scored as a floor, and trafilatura side
by side when it is installed (pip install -e '.[bench]'). Prints one JSON line.
Published F1 on this data: trafilatura .958, readability-lxml .922, plain lxml body .394.

JSON keys: bench, smoke, dataset, pages, cllm, plain_lxml_body, trafilatura (each {precision, recall, f1,
accuracy, seconds}; trafilatura null with not_run.trafilatura saying why when it is not installed).
  --smoke: 6 generated article pages (navigation, article, related links, footer) in the benchmark's
  layout, written to a temporary directory: the benchmark's data is not in the repository
"""
import argparse
import gzip
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter

import lxml.html

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP, missing  # noqa: E402
from cllm.scraper.extract import extract_html  # noqa: E402

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "bench", "extraction", "scrapinghub")
WORDS = ("river stone light harbour winter engine garden letter market window signal paper valley "
         "journey morning silver border forest number station island story mountain bridge").split()

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text)


def shingles(tokens: list[str], n: int = 4) -> Counter:
    if not tokens:
        return Counter()
    if len(tokens) < n:
        return Counter([tuple(tokens)])
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def page_counts(truth: str, pred: str) -> tuple[float, float, float]:
    """(tp, fp, fn) of one page, normalised to sum 1 (every page weighs the same)."""
    t, p = shingles(tokenize(truth)), shingles(tokenize(pred))
    tp = fp = fn = 0
    for key in set(t) | set(p):
        tc, pc = t.get(key, 0), p.get(key, 0)
        tp += min(tc, pc)
        fp += max(0, pc - tc)
        fn += max(0, tc - pc)
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def score(truth: dict, preds: dict) -> dict:
    precisions, recalls, exact = [], [], 0
    for key, item in truth.items():
        body = preds.get(key, "")
        tp, fp, fn = page_counts(item["articleBody"], body)
        if tp + fp > 0:
            precisions.append(tp / (tp + fp))
        if tp + fn > 0:
            recalls.append(tp / (tp + fn))
        exact += tokenize(item["articleBody"]) == tokenize(body)
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "accuracy": round(exact / len(truth), 4)}


def per_page_f1(truth: str, pred: str) -> float:
    tp, fp, fn = page_counts(truth, pred)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def write_smoke_data(directory: str, n: int = 6) -> None:
    """n article pages with their main text known, as the benchmark lays them out: ground-truth.json
    ({key: {articleBody, url}}) and html/KEY.html.gz."""
    os.makedirs(os.path.join(directory, "html"))
    rng, truth = random.Random(0), {}
    for i in range(n):
        paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 80))) + "." for _ in range(4)]
        nav = "".join(f'<li><a href="/s{k}">Section {k}</a></li>' for k in range(8))
        related = "".join(f'<li><a href="/r{k}">Related story {k} {rng.choice(WORDS)}</a></li>' for k in range(6))
        html = (f"<html><head><title>Article {i}</title></head><body><header><nav><ul>{nav}</ul></nav></header>"
                f"<main><article><h1>Article {i}</h1>{''.join(f'<p>{p}</p>' for p in paragraphs)}</article>"
                f"<aside><ul>{related}</ul></aside></main><footer>Copyright Smoke Site. All rights reserved."
                "</footer></body></html>")
        key = f"smoke{i:02d}"
        truth[key] = {"articleBody": "\n".join(paragraphs), "url": f"https://smoke.example/{key}"}
        with gzip.open(os.path.join(directory, "html", key + ".html.gz"), "wt", encoding="utf-8") as f:
            f.write(html)
    with open(os.path.join(directory, "ground-truth.json"), "w", encoding="utf-8") as f:
        json.dump(truth, f)


def run(name, fn, pages, truth):
    start = time.perf_counter()
    preds = {key: fn(html) for key, html in pages.items()}
    seconds = time.perf_counter() - start
    result = score(truth, preds)
    result["seconds"] = round(seconds, 2)
    return result, preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=0, help="score only the first N pages")
    ap.add_argument("--worst", type=int, default=0, help="list the K worst pages (per-page F1) on stderr")
    ap.add_argument("--no-trafilatura", action="store_true")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="cllm-bench-extraction-") as tmp:
            write_smoke_data(tmp)
            args.data = tmp
            return measure(args)
    if not os.path.isfile(os.path.join(args.data, "ground-truth.json")):
        sys.exit(f"bench/extraction.py: no ground-truth.json in {args.data} (the Scrapinghub article-extraction "
                 "benchmark's data; --data DIR, or --smoke)")
    measure(args)


def measure(args) -> None:
    with open(os.path.join(args.data, "ground-truth.json"), encoding="utf-8") as f:
        truth = json.load(f)
    keys = sorted(truth)[: args.limit or None]
    truth = {k: truth[k] for k in keys}
    pages = {}
    for key in keys:
        with gzip.open(os.path.join(args.data, "html", key + ".html.gz")) as f:
            pages[key] = f.read()

    def plain_body(html: bytes) -> str:
        doc = lxml.html.document_fromstring(html)
        body = doc.find("body")
        return (body if body is not None else doc).text_content()

    dataset = "generated (--smoke)" if args.smoke else "scrapinghub-article-extraction-benchmark"
    out = {"bench": "extraction", "smoke": args.smoke, "dataset": dataset, "pages": len(pages)}
    out["cllm"], preds = run("cllm", lambda h: extract_html(h).text, pages, truth)
    out["plain_lxml_body"], _ = run("plain", plain_body, pages, truth)
    no_trafilatura = "not asked for (--no-trafilatura)" if args.no_trafilatura else missing("trafilatura", "bench")
    if no_trafilatura:
        out["trafilatura"], out["not_run"] = None, {"trafilatura": no_trafilatura}
    else:
        import trafilatura  # optional (the bench extra), and slow to import

        out["trafilatura"], _ = run("trafilatura", lambda h: trafilatura.extract(h) or "", pages, truth)
    if args.worst:
        ranked = sorted(keys, key=lambda k: per_page_f1(truth[k]["articleBody"], preds[k]))
        for k in ranked[: args.worst]:
            tp, fp, fn = page_counts(truth[k]["articleBody"], preds[k])
            print(f"{per_page_f1(truth[k]['articleBody'], preds[k]):.3f} tp={tp:.2f} fp={fp:.2f} fn={fn:.2f} "
                  f"{k[:12]} {truth[k]['url']}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
