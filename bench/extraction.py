"""Main-text extraction quality on the Scrapinghub article-extraction benchmark.

    python bench/extraction.py [--data DIR] [--limit N] [--worst K] [--no-trafilatura]

Scores `cllm.scraper.extract.extract_html` with the benchmark's own metric (its evaluate.py, as
summarised in the data folder's SOURCE.md): \\w+ tokens, multisets of 4-token shingles, per-page
TP/FP/FN normalised to sum 1, macro-averaged precision and recall, F1 = their harmonic mean,
accuracy = exact token-list match. Plain lxml body text is scored as a floor, and trafilatura side
by side when it is installed (pip install -e '.[bench]'). Prints one JSON line.
Published F1 on this data: trafilatura .958, readability-lxml .922, plain lxml body .394.
"""
import argparse
import gzip
import json
import os
import re
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "bench", "extraction", "scrapinghub")

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
    args = ap.parse_args()

    with open(os.path.join(args.data, "ground-truth.json"), encoding="utf-8") as f:
        truth = json.load(f)
    keys = sorted(truth)[: args.limit or None]
    truth = {k: truth[k] for k in keys}
    pages = {}
    for key in keys:
        with gzip.open(os.path.join(args.data, "html", key + ".html.gz")) as f:
            pages[key] = f.read()

    import lxml.html

    from cllm.scraper.extract import extract_html

    def plain_body(html: bytes) -> str:
        doc = lxml.html.document_fromstring(html)
        body = doc.find("body")
        return (body if body is not None else doc).text_content()

    out = {"bench": "extraction", "dataset": "scrapinghub-article-extraction-benchmark", "pages": len(pages)}
    out["cllm"], preds = run("cllm", lambda h: extract_html(h).text, pages, truth)
    out["plain_lxml_body"], _ = run("plain", plain_body, pages, truth)
    if not args.no_trafilatura:
        try:
            import trafilatura
        except ImportError:
            out["trafilatura"] = "not installed"
        else:
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
