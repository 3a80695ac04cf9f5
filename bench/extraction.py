"""Main-text extraction quality on three public benchmarks, CLLM beside trafilatura on the same pages.

    python bench/extraction.py [--set scrapinghub|trafilatura|readability|all] [--data-root DIR]
                               [--scrapinghub DIR] [--trafilatura DIR] [--readability DIR]
                               [--limit N] [--worst K] [--dump FILE] [--no-trafilatura] [--smoke]

The sets (bench/fetch_extraction_sets.py fetches the two that are not Scrapinghub's; none is in the
repository) and how each is scored:
- scrapinghub: the Scrapinghub article-extraction benchmark (181 news/blog pages, MIT), with its own
  metric (its evaluate.py, as summarised in the data folder's SOURCE.md): \\w+ tokens, multisets of
  4-token shingles, per-page TP/FP/FN normalised to sum 1, macro-averaged precision and recall, F1 =
  their harmonic mean, accuracy = exact token-list match.
- readability: Mozilla Readability's test pages (130 pages, Apache-2.0): the text of expected.html is
  the gold text, scored with the same shingle metric.
- trafilatura: trafilatura's evaluation set (990 pages, many non-English forums, shops, recipes;
  Apache-2.0), with its own metric (tests/evaluate.py there): per page, the "with" snippets found in the
  whitespace-normalised text are true positives, the "without" snippets found are false positives;
  precision, recall and F1 over the counts summed over all pages, accuracy = (TP + TN) / all snippets.
Plain lxml body text is scored as a floor, and trafilatura (pip install -e '.[bench]') with the
settings of its own evaluation (include_comments=False, include_tables=True). Published F1 on the
Scrapinghub data: trafilatura .958, readability-lxml .922, plain lxml body .394. Prints one JSON line.

JSON keys: bench, smoke, sets ({name: {dataset, metric, pages, cllm, plain_lxml_body, trafilatura}}, each side
{precision, recall, f1, accuracy, seconds}; trafilatura null with not_run.trafilatura saying why when it is
not installed or not asked for).
  --smoke: a few generated pages per set, in each set's own layout (navigation, article, related links,
  footer), written to a temporary directory: the benchmarks' pages are not in the repository
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
from cllm.scraper.dom import BLOCK_TAGS  # noqa: E402
from cllm.scraper.extract import extract_html  # noqa: E402

DEFAULT_ROOT = os.path.join(ROOT, "..", "shared", "bench", "extraction")
SETS = ("scrapinghub", "trafilatura", "readability")
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


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def score_shingles(gold: dict, preds: dict) -> dict:
    """Scrapinghub's metric: macro-averaged shingle precision and recall, gold = {key: text}."""
    precisions, recalls, exact = [], [], 0
    for key, truth in gold.items():
        body = preds.get(key, "")
        tp, fp, fn = page_counts(truth, body)
        if tp + fp > 0:
            precisions.append(tp / (tp + fp))
        if tp + fn > 0:
            recalls.append(tp / (tp + fn))
        exact += tokenize(truth) == tokenize(body)
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(_f1(precision, recall), 4),
            "accuracy": round(exact / len(gold), 4)}


def _norm(text: str) -> str:
    return " ".join(text.split())


def snippet_counts(item: dict, pred: str) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of one page of trafilatura's set: which snippets the text holds."""
    text = _norm(pred)
    tp = sum(_norm(s) in text for s in item["with"])
    fp = sum(_norm(s) in text for s in item["without"])
    return tp, fp, len(item["with"]) - tp, len(item["without"]) - fp


def score_snippets(gold: dict, preds: dict) -> dict:
    """trafilatura's metric: snippet counts summed over the pages, gold = {key: {with, without}}."""
    tp = fp = fn = tn = 0
    for key, item in gold.items():
        a, b, c, d = snippet_counts(item, preds.get(key, ""))
        tp, fp, fn, tn = tp + a, fp + b, fn + c, tn + d
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(_f1(precision, recall), 4),
            "accuracy": round((tp + tn) / max(1, tp + fp + fn + tn), 4)}


def page_f1(metric: str, gold, pred: str) -> float:
    if metric == "snippets":
        tp, fp, fn, _ = snippet_counts(gold, pred)
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    tp, fp, fn = page_counts(gold, pred)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def html_text(html: str) -> str:
    """The text of an HTML fragment, a line break at every block element (so that words of adjacent
    paragraphs do not run together into one token)."""
    doc = lxml.html.fromstring(html)
    for el in doc.iter():
        if isinstance(el.tag, str) and el.tag in BLOCK_TAGS:
            el.tail = "\n" + (el.tail or "")
            el.text = "\n" + (el.text or "")
    return doc.text_content()


# Readers: each returns (pages {key: html bytes}, gold {key: text or {with, without}}, metric name).

def read_scrapinghub(directory: str, limit: int):
    with open(os.path.join(directory, "ground-truth.json"), encoding="utf-8") as f:
        truth = json.load(f)
    keys = sorted(truth)[: limit or None]
    pages = {}
    for key in keys:
        with gzip.open(os.path.join(directory, "html", key + ".html.gz")) as f:
            pages[key] = f.read()
    return pages, {k: truth[k]["articleBody"] for k in keys}, "shingles"


def read_trafilatura(directory: str, limit: int):
    with open(os.path.join(directory, "tests", "evaldata.json"), encoding="utf-8") as f:
        evaldata = json.load(f)
    pages, gold = {}, {}
    for url in sorted(evaldata)[: limit or None]:
        item = evaldata[url]
        for sub in ("eval", "cache"):  # trafilatura's evaluation looks in this order too
            path = os.path.join(directory, "tests", sub, item["file"])
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    pages[url] = f.read()
                gold[url] = {"with": item["with"], "without": item["without"]}
                break
    return pages, gold, "snippets"


def read_readability(directory: str, limit: int):
    base = os.path.join(directory, "test", "test-pages")
    pages, gold = {}, {}
    for name in sorted(os.listdir(base))[: limit or None]:
        source, expected = os.path.join(base, name, "source.html"), os.path.join(base, name, "expected.html")
        if os.path.isfile(source) and os.path.isfile(expected):
            with open(source, "rb") as f:
                pages[name] = f.read()
            with open(expected, encoding="utf-8") as f:
                gold[name] = html_text(f.read())
    return pages, gold, "shingles"


READERS = {"scrapinghub": read_scrapinghub, "trafilatura": read_trafilatura, "readability": read_readability}
MARKERS = {"scrapinghub": "ground-truth.json", "trafilatura": os.path.join("tests", "evaldata.json"),
           "readability": os.path.join("test", "test-pages")}
DATASETS = {"scrapinghub": "scrapinghub-article-extraction-benchmark", "trafilatura": "trafilatura-evaluation-set",
            "readability": "mozilla-readability-test-pages"}


def _smoke_page(rng: random.Random, i: int) -> tuple[str, list[str]]:
    paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 80))) + "." for _ in range(4)]
    nav = "".join(f'<li><a href="/s{k}">Section {k}</a></li>' for k in range(8))
    related = "".join(f'<li><a href="/r{k}">Related story {k} {rng.choice(WORDS)}</a></li>' for k in range(6))
    html = (f"<html><head><title>Article {i}</title></head><body><header><nav><ul>{nav}</ul></nav></header>"
            f"<main><article><h1>Article {i}</h1>{''.join(f'<p>{p}</p>' for p in paragraphs)}</article>"
            f"<aside><ul>{related}</ul></aside></main><footer>Copyright Smoke Site. All rights reserved."
            "</footer></body></html>")
    return html, paragraphs


def write_smoke_data(root: str, n: int = 6) -> None:
    """n article pages with their main text known, per set in that set's own layout (what its reader reads)."""
    rng = random.Random(0)
    shub, traf, read = (os.path.join(root, name) for name in SETS)
    os.makedirs(os.path.join(shub, "html"))
    os.makedirs(os.path.join(traf, "tests", "eval"))
    truth, evaldata = {}, {}
    for i in range(n):
        html, paragraphs = _smoke_page(rng, i)
        key = f"smoke{i:02d}"
        truth[key] = {"articleBody": "\n".join(paragraphs), "url": f"https://smoke.example/{key}"}
        with gzip.open(os.path.join(shub, "html", key + ".html.gz"), "wt", encoding="utf-8") as f:
            f.write(html)
        with open(os.path.join(traf, "tests", "eval", key + ".html"), "w", encoding="utf-8") as f:
            f.write(html)
        evaldata[f"https://smoke.example/{key}"] = {
            "file": key + ".html", "with": [" ".join(p.split()[2:8]) for p in paragraphs],
            "without": ["All rights reserved", "Related story 3"]}
        os.makedirs(os.path.join(read, "test", "test-pages", key))
        with open(os.path.join(read, "test", "test-pages", key, "source.html"), "w", encoding="utf-8") as f:
            f.write(html)
        with open(os.path.join(read, "test", "test-pages", key, "expected.html"), "w", encoding="utf-8") as f:
            f.write("<div>" + "".join(f"<p>{p}</p>" for p in paragraphs) + "</div>")
    with open(os.path.join(shub, "ground-truth.json"), "w", encoding="utf-8") as f:
        json.dump(truth, f)
    with open(os.path.join(traf, "tests", "evaldata.json"), "w", encoding="utf-8") as f:
        json.dump(evaldata, f)


def run(fn, pages: dict, gold: dict, metric: str):
    start = time.perf_counter()
    preds = {key: fn(html) for key, html in pages.items()}
    seconds = time.perf_counter() - start
    result = (score_snippets if metric == "snippets" else score_shingles)(gold, preds)
    result["seconds"] = round(seconds, 2)
    return result, preds


def plain_body(html: bytes) -> str:
    try:
        doc = lxml.html.document_fromstring(html)
    except Exception:  # noqa: BLE001 - the floor counts an unparsable page as no text
        return ""
    body = doc.find("body")
    return (body if body is not None else doc).text_content()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=[*SETS, "all"], default="all", dest="which")
    ap.add_argument("--data-root", default=DEFAULT_ROOT,
                    help="the folder holding one folder per set (default: %(default)s)")
    for name in SETS:
        ap.add_argument(f"--{name}", default="", metavar="DIR", help=f"the {name} set's folder (default: "
                        f"DATA_ROOT/{name})")
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)  # the old name of --scrapinghub
    ap.add_argument("--limit", type=int, default=0, help="score only the first N pages of each set")
    ap.add_argument("--worst", type=int, default=0, help="list the K worst pages (per-page F1) on stderr")
    ap.add_argument("--dump", default="", metavar="FILE",
                    help="write one JSON line per page (set, page, each side's F1 and text) to FILE, to find the "
                    "pages CLLM loses most against trafilatura")
    ap.add_argument("--no-trafilatura", action="store_true")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    names = list(SETS) if args.which == "all" else [args.which]
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="cllm-bench-extraction-") as tmp:
            write_smoke_data(tmp)
            return measure(args, {name: os.path.join(tmp, name) for name in names})
    dirs = {name: getattr(args, name) or os.path.join(args.data_root, name) for name in names}
    if args.data and "scrapinghub" in dirs:
        dirs["scrapinghub"] = args.data
    for name, directory in dirs.items():
        if not os.path.exists(os.path.join(directory, MARKERS[name])):
            sys.exit(f"bench/extraction.py: no {MARKERS[name]} in {directory} (the {name} set: "
                     + ("the Scrapinghub article-extraction benchmark's data" if name == "scrapinghub" else
                        "python bench/fetch_extraction_sets.py fetches it") + f"; --{name} DIR, or --smoke)")
    measure(args, dirs)


def measure(args, dirs: dict) -> None:
    no_trafilatura = "not asked for (--no-trafilatura)" if args.no_trafilatura else missing("trafilatura", "bench")
    sides = {"cllm": lambda h: extract_html(h).text, "plain_lxml_body": plain_body}
    if not no_trafilatura:
        import trafilatura  # optional (the bench extra), and slow to import

        # the settings of trafilatura's own evaluation (its tests/eval_common.py)
        sides["trafilatura"] = lambda h: trafilatura.extract(h, include_comments=False, include_tables=True) or ""
    out = {"bench": "extraction", "smoke": args.smoke, "sets": {}}
    if no_trafilatura:
        out["not_run"] = {"trafilatura": no_trafilatura}
    dump = open(args.dump, "w", encoding="utf-8") if args.dump else None  # noqa: SIM115 - closed below
    for name, directory in dirs.items():
        pages, gold, metric = READERS[name](directory, args.limit)
        row = {"dataset": "generated (--smoke)" if args.smoke else DATASETS[name], "metric": metric,
               "pages": len(pages)}
        preds = {}
        for side, fn in sides.items():
            row[side], preds[side] = run(fn, pages, gold, metric)
        if no_trafilatura:
            row["trafilatura"] = None
        out["sets"][name] = row
        if args.worst:
            cllm = preds["cllm"]
            ranked = sorted(gold, key=lambda k: page_f1(metric, gold[k], cllm[k]))
            for k in ranked[: args.worst]:
                other = (f" trafilatura={page_f1(metric, gold[k], preds['trafilatura'][k]):.3f}"
                         if "trafilatura" in preds else "")
                print(f"{name} {page_f1(metric, gold[k], cllm[k]):.3f}{other} {k[:90]}", file=sys.stderr)
        if dump:
            for k in gold:
                dump.write(json.dumps({"set": name, "page": k, **{f"{side}_f1": round(page_f1(metric, gold[k], p[k]), 4)
                                                                  for side, p in preds.items()},
                                       **{f"{side}_text": p[k] for side, p in preds.items()}}) + "\n")
        print(f"{name}: " + "  ".join(f"{side} F1 {row[side]['f1']:.3f} P {row[side]['precision']:.3f} R "
                                      f"{row[side]['recall']:.3f} {row[side]['seconds']:.1f}s"
                                      for side in sides), file=sys.stderr)
    if dump:
        dump.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
