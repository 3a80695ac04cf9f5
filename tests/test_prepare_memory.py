"""prepare on a crawl's output streams: its chunk sizes (the filters' batches, the encoder's pieces, the filter
report's flushes) do not change a byte of the dataset, and its peak memory does not grow with the corpus's text
(bench/prepare.py's memory part measures the RSS; docs/design.md gives the figures)."""

import json
import os
import random
import tracemalloc
from array import array
from collections import Counter
from pathlib import Path

import numba
import numpy as np
import pytest

import cllm.data.corpus as corpus_module
import cllm.data.filters.neardup as neardup
import cllm.data.filters.spill as spill
import cllm.data.prepare as prepare_module
import cllm.tokenizers.base as tokenizer_base
from cllm.data import prepare_dataset
from cllm.data.corpus import DocLengths
from cllm.data.files import FileList, crawl_pages, find_files
from cllm.data.filters import DocumentLog
from cllm.data.filters.boilerplate import BoilerplateCounter
from cllm.errors import DataError

WORDS = ("the", "a", "of", "and", "to", "in", "that", "is", "with", "for") + tuple(
    f"{c}{v}{k}" for c in "bcdfglmnprst" for v in "aeiou" for k in ("n", "st", "rk"))


def build_crawl(root: Path, pages: int, page_chars: int, seed: int = 0) -> int:
    """A crawl's output folder (pages/ and manifest.jsonl, as cllm/scraper/output.py writes) of `pages` pages of
    about `page_chars` characters of random sentences on 2 sites, each site's pages with a menu line, and every
    fifth page a copy of an earlier one (near-duplicates, exact duplicates); returns the bytes of its pages."""
    rng = random.Random(seed)
    (root / "pages").mkdir(parents=True)
    manifest, texts, total = [], [], 0
    for i in range(pages):
        site = i % 2
        if i % 5 == 4:
            text = texts[rng.randrange(len(texts))]  # a copy: the exact- or near-duplicate filters drop it
        else:
            paras, size = [], 0
            while size < page_chars:
                para = " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
                                for _ in range(5))
                paras.append(para)
                size += len(para) + 2
            text = f"Page {i}\n\n" + "\n\n".join(paras)
            texts.append(text)
        data = (f"Home | Shop | About site {site}\n{text}\n").encode()
        (root / "pages" / f"{i:05d}.txt").write_bytes(data)
        manifest.append(json.dumps({"url": f"https://site{site}.example/{i}", "file": f"pages/{i:05d}.txt"}))
        total += len(data)
    (root / "manifest.jsonl").write_text("\n".join(manifest) + "\n")
    return total


def dataset_files(out: Path) -> dict:
    """{file name: its bytes} of a prepared dataset, meta.json without its timing."""
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    meta = json.loads(files["meta.json"])
    del meta["seconds"]
    files["meta.json"] = meta
    return files


@pytest.mark.parametrize("tokenizer,vocab", [("char", None), ("word", 300)])
def test_chunk_sizes_do_not_change_the_dataset(tmp_path, monkeypatch, tokenizer, vocab):
    """Tiny chunks everywhere (2-page filter batches or 5,000 characters, 700-character encoder pieces, a report
    record written at a time, MinHash signatures stored 3 to a block) give the dataset, report and meta.json of
    the default chunks, byte for byte."""
    crawl = tmp_path / "crawl"
    build_crawl(crawl, 60, 3_000)

    def run(out):
        prepare_dataset(str(crawl), str(out), tokenizer=tokenizer, vocab_size=vocab, progress=False)
        return dataset_files(out)

    big = run(tmp_path / "big")
    assert {"train.bin", "val.bin", "tokenizer.json", "filters.json", "documents.jsonl"} <= set(big)
    assert big["meta.json"]["filters"]["near_duplicate"]["documents"] > 0  # the copies were found
    pieces = tokenizer_base.text_pieces
    monkeypatch.setattr(corpus_module, "FILTER_BATCH", 2)
    monkeypatch.setattr(corpus_module, "FILTER_BATCH_CHARS", 5_000)
    monkeypatch.setattr(tokenizer_base, "text_pieces", lambda text, size=700: pieces(text, size))
    monkeypatch.setattr(DocumentLog, "FLUSH", 1)
    monkeypatch.setattr(neardup, "SIGNATURE_BLOCK", 3)
    small = run(tmp_path / "small")
    assert small.keys() == big.keys()
    for name in big:
        assert small[name] == big[name], name
    sources = [json.loads(line)["source"] for line in big["documents.jsonl"].splitlines()]
    assert sources == sorted(sources)  # a record per page the filters read (exact duplicates are not), in order
    assert len(sources) == 60 - big["meta.json"]["corpus"]["duplicates"]


def test_peak_memory_does_not_grow_with_the_text(tmp_path, monkeypatch):
    """Python's, NumPy's and the kernels' allocations (tracemalloc) at their peak during prepare, on crawls of 8
    and 32 pages of ~100 KB each: the 4x corpus adds a small fraction of its extra bytes (what grows is per page:
    its length, hashes, MinHash signature), not its text (1 byte a character) nor its token ids (2 bytes each, a
    character's with the char tokenizer). The filters' batches are capped at 200,000 characters (2 pages), so that
    both corpora fill several and the peak, one batch's, is the same."""
    monkeypatch.setattr(corpus_module, "FILTER_BATCH_CHARS", 200_000)
    # the filters' kernels take scratch memory per thread, its peak varying with how the threads share a batch:
    # one thread makes it the same in every batch and run (the largest batch's, not the corpus's)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        warm = tmp_path / "warm"
        build_crawl(warm, 4, 2_000)
        prepare_dataset(str(warm), str(tmp_path / "out-warm"), tokenizer="char", progress=False)  # models, kernels
        peaks, sizes = [], []
        for pages in (8, 32):
            crawl = tmp_path / f"crawl{pages}"
            sizes.append(build_crawl(crawl, pages, 100_000, seed=pages))
            tracemalloc.start()
            try:
                ds = prepare_dataset(str(crawl), str(tmp_path / f"out{pages}"), tokenizer="char", progress=False)
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
            assert ds.meta["train_tokens"] > 0.5 * sizes[-1]  # most of the text is kept and tokenized
    finally:
        numba.set_num_threads(threads)
    growth = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    assert growth < 0.1, (peaks, sizes, growth)  # measured 0.012 (~1.2 KB a page); keeping every page's text: 1.4


def test_boilerplate_counter_keeps_the_keys_on_min_pages_pages():
    """BoilerplateCounter.finish (its hashes sorted in place) against np.unique's counts, on random keys."""
    rng = random.Random(3)
    for _ in range(300):
        m = rng.randint(2, 5)
        keys = [rng.randint(-20, 20) for _ in range(rng.randint(0, 60))]
        counter = BoilerplateCounter(m)
        counter._keys = array("q", keys)
        values, counts = np.unique(np.array(keys, np.int64), return_counts=True)
        assert counter.finish() == set(values[counts >= m].tolist()), (keys, m)


@pytest.mark.parametrize("budget_mb,batch", [(0, 256), (0.002, 7), (0.02, 7)])
def test_state_on_disk_gives_the_same_dataset(tmp_path, monkeypatch, budget_mb, batch):
    """A tiny --filter-memory-mb moves the filters' state to disk (cllm/data/filters/spill.py): from the start (0),
    or part way (the near-dup index with 3 signatures a block past ~9 kept pages, the boilerplate hashes in runs
    of ~200, the exact-duplicate hashes past 5 or 57), and the corpus's file list (runs of 7 files), the
    manifest's sites and (below 0.01 MB) the document lengths (blocks of 5, read 4 at a time); the dataset, report
    and meta.json are the in-memory run's, byte for byte, and the spill directory is gone (dataset_files would
    read it and fail)."""
    crawl = tmp_path / "crawl"
    build_crawl(crawl, 90, 2_000)

    def run(out, **options):
        prepare_dataset(str(crawl), str(out), tokenizer="char", progress=False, **options)
        return dataset_files(out)

    memory = run(tmp_path / "memory")
    assert memory["meta.json"]["filters"]["near_duplicate"]["documents"] > 0
    assert memory["meta.json"]["filters"]["boilerplate"]["lines"] > 0
    assert memory["meta.json"]["corpus"]["duplicates"] > 0
    spilled = Counter()
    for cls, name in ((neardup.NearDuplicateIndex, "_to_disk"), (BoilerplateCounter, "_write_run"),
                      (spill.DiskSet, "__init__"), (spill.DiskDict, "update"), (FileList, "_write")):
        def counted(*args, _f=getattr(cls, name), _name=name, **kw):
            spilled[_name] += 1
            return _f(*args, **kw)
        monkeypatch.setattr(cls, name, counted)
    monkeypatch.setattr(corpus_module, "FILTER_BATCH", batch)  # later batches look up earlier ones on disk
    monkeypatch.setattr(neardup, "SIGNATURE_BLOCK", 3)
    monkeypatch.setattr(FileList, "MIN_RUN", 7)
    monkeypatch.setattr(DocLengths, "MIN_BLOCK", 5)
    monkeypatch.setattr(DocLengths, "CHUNK", 4)
    new_file = spill.SpillDir.file
    monkeypatch.setattr(spill.SpillDir, "file", lambda self, name: spilled.update([name]) or new_file(self, name))
    disk = run(tmp_path / "disk", filter_memory_mb=budget_mb)
    assert spilled["_to_disk"] >= 1 and spilled["__init__"] >= 1, spilled
    assert (spilled["_write_run"] >= 2) == (budget_mb < 0.01), spilled  # 0.02: the line hashes stay in memory
    assert spilled["files-run"] >= 3 and spilled["files"] == 1 and spilled["update"] >= 2, spilled  # 90 pages
    assert (spilled["lengths"] == 2) == (budget_mb < 0.01), spilled  # a file for each of the two passes
    assert disk.keys() == memory.keys()
    for name in memory:
        assert disk[name] == memory[name], name


def test_near_duplicate_index_on_disk_answers_as_in_memory():
    """seen_batch on random signatures with planted copies (a few of their values changed, some past the
    threshold, some not), the index on disk from the start or part way, in batches of 1 to 40: the same matches
    (the first kept document found, in band order) as one in memory."""
    rng = np.random.default_rng(5)
    sigs = []
    for i in range(600):
        if i > 10 and rng.random() < 0.4:
            sig = sigs[rng.integers(len(sigs))].copy()
            changed = rng.choice(sig.size, rng.integers(0, 90), replace=False)
            sig[changed] = rng.integers(0, 2**32, changed.size, dtype=np.uint32)
        else:
            sig = rng.integers(0, 2**32, neardup.NUM_PERM, dtype=np.uint32)
        sigs.append(sig)
    sigs = np.stack(sigs)
    expected = neardup.NearDuplicateIndex(0.5).seen_batch(sigs)
    assert 0 < sum(m >= 0 for m in expected) < len(sigs)
    for limit in (0, 60_000):
        index = neardup.NearDuplicateIndex(0.5, limit=limit)
        got, i = [], 0
        while i < len(sigs):
            n = int(rng.integers(1, 40))
            got += index.seen_batch(sigs[i:i + n])
            i += n
        assert index.on_disk
        index.close()
        index.spill.close()
        assert got == expected, limit


def test_boilerplate_counter_on_disk_keeps_the_same_keys(tmp_path):
    """BoilerplateCounter with a limit of a few hashes (its runs on disk, counted range by range) against one in
    memory, on pages of random lines from a small set."""
    rng = random.Random(4)
    lines = [f"line {k}" for k in range(300)]
    pages = [(rng.randrange(3), "\n".join(rng.choices(lines, k=rng.randint(1, 30)))) for _ in range(400)]
    memory = BoilerplateCounter(3)
    disk = BoilerplateCounter(3, limit=800, spill=spill.SpillDir(str(tmp_path)))
    for site, doc in pages:
        memory.add(site, doc)
        disk.add(site, doc)
    assert len(disk._runs) > 10
    expected = memory.finish()
    assert expected and disk.finish() == expected
    disk.spill.close()
    assert list(tmp_path.iterdir()) == []


def test_state_on_disk_is_removed_on_error(tmp_path, monkeypatch):
    """Ctrl-C during the encoding pass (after the filters put their state on disk, in DIR/filters-spill-*.tmp):
    the spill directory is gone, as after a run that finishes; one a killed run left goes with the next run."""
    crawl = tmp_path / "crawl"
    build_crawl(crawl, 20, 1_000)
    made = []
    new_file = spill.SpillDir.file

    def file(self, name):
        made.append(self)
        return new_file(self, name)

    def interrupted(*args, **kwargs):
        assert made and all(os.path.isdir(d.path) for d in made if d.path)
        raise KeyboardInterrupt

    monkeypatch.setattr(spill.SpillDir, "file", file)
    monkeypatch.setattr(prepare_module, "_encode_pass", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as caught:  # its traceback keeps the corpus alive: no cleanup by the GC
        prepare_dataset(str(crawl), str(out), tokenizer="char", progress=False, filter_memory_mb=0)
    assert made and not [p.name for p in out.iterdir() if p.name.startswith("filters-spill")], caught
    (out / "filters-spill-killed.tmp").mkdir()  # a killed run's: the next run removes it
    (out / "filters-spill-killed.tmp" / "bands-1").write_bytes(b"x")
    monkeypatch.undo()
    prepare_dataset(str(crawl), str(out), tokenizer="char", progress=False)
    assert not [p.name for p in out.iterdir() if p.name.startswith("filters-spill")]


def test_find_files_orders_by_path_components(tmp_path):
    """find_files sorts only when the walk's order is not already by path components (so that a crawl's flat
    pages/ does not hold every file's key at once): a flat folder, and a folder whose subfolder sorts between its
    files, come out in path-component order either way."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("b.txt", "a.txt", "c.md"):
        (flat / name).write_text("x")
    nested = tmp_path / "nested"
    (nested / "a").mkdir(parents=True)
    (nested / "b.txt").write_text("x")
    (nested / "a" / "z.txt").write_text("x")
    (nested / "0.txt").write_text("x")
    _, got, _ = find_files(str(flat))
    assert [os.path.basename(p) for p, _ in got] == ["a.txt", "b.txt", "c.md"]
    _, got, _ = find_files(str(nested))
    assert [os.path.relpath(p, nested) for p, _ in got] == ["0.txt", os.path.join("a", "z.txt"), "b.txt"]


def test_file_list_on_disk_keeps_the_order_and_the_sites(tmp_path, monkeypatch):
    """Past its limit the file list is sorted in runs on disk and merged (FileList), the manifest's sites go to a
    DiskDict: the same files, in the same order (by path components, where a plain string sort differs), with the
    same sites (a page named twice in the manifest: its last record's) as in memory."""
    crawl = tmp_path / "crawl"
    pages = crawl / "pages"
    names = ["b.txt", "a.txt", "a-b/x.txt", "a/z.md", "a/y/0.txt", "0.txt", "c.html", "a/b c.txt", "zz/q.txt"]
    for name in names:
        (pages / name).parent.mkdir(parents=True, exist_ok=True)
        (pages / name).write_text("x")
    (pages / ".hidden.txt").write_text("x")
    (pages / "image.png").write_bytes(b"x")
    records = [{"url": f"https://s{i % 3}.example/{i}", "file": "pages/" + name} for i, name in enumerate(names[:-1])]
    records.append({"url": "https://late.example/", "file": "pages/b.txt"})  # b.txt again: this site wins
    (crawl / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{torn")

    def listing(spill_dir, limit):
        sites: dict = {}
        site_of = lambda url: sites.setdefault(url.split("/")[2], len(sites))  # noqa: E731
        found = crawl_pages(str(crawl), site_of, spill_dir, limit)
        on_disk = isinstance(found, spill.DiskDict)
        root, files, skipped = find_files(str(crawl), spill_dir, limit, found)
        if on_disk:
            found.close()
        return on_disk, [(os.path.relpath(p, root), k, s) for p, k, s in files.with_sites()], skipped

    _, memory, skipped = listing(None, None)
    assert [p for p, _, _ in memory] == ["0.txt", "a/b c.txt", "a/y/0.txt", "a/z.md", "a-b/x.txt", "a.txt", "b.txt",
                                         "c.html", "zz/q.txt"]
    assert dict((p, s) for p, _, s in memory)["b.txt"] == 3 and memory[-1][2] == -1  # zz/q.txt: not in the manifest
    assert skipped == {"hidden": 1, "unsupported": 1}
    monkeypatch.setattr(FileList, "MIN_RUN", 2)
    spill_dir = spill.SpillDir(str(tmp_path))
    on_disk, disk, disk_skipped = listing(spill_dir, 0)
    assert on_disk and len(os.listdir(spill_dir.path)) == 1  # the merged list: runs and the site table gone
    assert disk == memory and disk_skipped == skipped
    spill_dir.close()


def test_document_lengths_on_disk_split_as_in_memory(monkeypatch):
    """DocLengths past its limit (blocks of 1 to 5 lengths in a file, read 3 at a time) gives the lengths back in
    order, and _split_plan, reading them chunk by chunk, the plan it gives for them in one list."""
    rng = random.Random(0)
    spill_dir = spill.SpillDir()
    monkeypatch.setattr(DocLengths, "MIN_BLOCK", 1)
    monkeypatch.setattr(DocLengths, "CHUNK", 3)
    for _ in range(300):
        lengths = [rng.choice([1, 2, 100, 10_000, rng.randint(1, 50)]) for _ in range(rng.randint(1, 12))]
        block = rng.randint(1, 5)
        stored = DocLengths(spill_dir, block)
        for n in lengths:
            stored.append(n)
        assert len(stored) == len(lengths) and list(stored) == lengths
        assert (stored._file is not None) == (len(lengths) >= block)
        for f in (0.05, 0.1, 0.3, 0.5, 0.9):
            assert prepare_module._split_plan(stored, f) == prepare_module._split_plan(lengths, f), (lengths, f)
        stored.close()
    spill_dir.close()


def test_file_list_on_disk_with_an_out_that_is_a_file(tmp_path, monkeypatch):
    """The file list spills into DIR before DIR is claimed: an --out that is a file is the same clear DataError."""
    crawl = tmp_path / "crawl"
    build_crawl(crawl, 6, 500)
    out = tmp_path / "out"
    out.write_text("not a folder")
    monkeypatch.setattr(FileList, "MIN_RUN", 2)
    with pytest.raises(DataError, match="cannot write to output directory .*choose another --out"):
        prepare_dataset(str(crawl), str(out), tokenizer="char", progress=False, filter_memory_mb=0)
