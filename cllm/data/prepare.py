"""Corpus -> token dataset: DIR/tokenizer.json, DIR/train.bin, DIR/val.bin, DIR/meta.json.

Two streaming passes over the corpus (one document in memory at a time): the first trains the
tokenizer (and fills the corpus statistics and per-document lengths), the second encodes each
document piece by piece (`Tokenizer.encode_pieces`: ~64K characters a piece, cut where the ids do
not change) and appends the ids to train.bin or val.bin. So the memory of a document's ids, token
lists and code points stays a few times one piece; a document is held as text (and, while it is
read and cleaned, a few copies of that; the filters hold a batch of documents). What grows with the corpus is
what training must keep (distinct characters, words or BPE chunks with their counts: the vocabulary, not the
size) and a few numbers per document: its length, its exact-duplicate hash, and with the filters its
boilerplate line hashes, MinHash signature and band keys (~1.3 KB a page in all: bench/prepare.py's memory
part, docs/design.md). Those hashes and the MinHash index stay in memory up to --filter-memory-mb (256 MB),
then move to DIR/filters-spill-*.tmp (cllm/data/filters/spill.py; removed at the end, on error or Ctrl-C), and
so do the file list, the crawl manifest's sites and the document lengths (cllm/data/files.py's FileList,
cllm/data/corpus.py's DocLengths), so that past it the peak stops growing with the pages (~0.01 KB a page
measured); the filter report's per-document records go to a temporary file.

Split (deterministic, by PrepareOptions' `val_fraction`, f): a single document splits by token
position (the first 1 - f train, as nanoGPT); several documents split at a document boundary: the
first documents holding ~1 - f of the characters go to train, the rest to val. Word and BPE append EOS
after every document, so documents are separated in the token stream (char has no EOS).

Filters (cllm/data/filters/: boilerplate lines, language, Gopher's and C4's quality rules, near-duplicates)
run while the corpus is read, by default on a crawl's output only; the first pass decides. When any is on,
DIR/filters.json (what each rule removed, with examples) and DIR/documents.jsonl (each document's source,
language and fate) are written after it; meta.json records the languages (documents kept per language) always.

Cache: meta.json records a key hashing the input files (relative path + content), the options and
this format's version; re-running with the same key reuses DIR as is, anything else rebuilds it.
meta.json is written last and deleted first, so a crash mid-way never leaves a "valid" cache.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import inspect
import json
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from cllm import kinds
from cllm.chat.template import CHATML_TOKENS, add_chat_tokens
from cllm.config import option
from cllm.data.clean import options_of
from cllm.data.corpus import CorpusOptions, corpus_at
from cllm.data.errors import EmptyCorpusError, TokenFileError
from cllm.data.filters import FilterOptions
from cllm.data.filters.spill import SPILL_PREFIX
from cllm.data.tokenfile import TokenFileWriter, export_dataset_tokens, read_token_file, read_token_header
from cllm.errors import CLLMError, DataError, TokenizerError
from cllm.fileio import atomic_write_text
from cllm.tokenizers import KINDS as TOKENIZER_CLASSES
from cllm.tokenizers import load_tokenizer, train_tokenizer
from cllm.tokenizers.imports import import_tokenizer

PREPARE_VERSION = 1
KINDS = ("word", "char", "bpe", "wordpiece")

# each trained kind's vocabulary size when --vocab-size is left out: its train() default, their one home
VOCAB_SIZES = {kind: inspect.signature(TOKENIZER_CLASSES[kind].train).parameters["vocab_size"].default
               for kind in ("word", "bpe", "wordpiece")}


@dataclass
class PrepareOptions(FilterOptions, CorpusOptions):
    """How a dataset is prepared: the flags of `prepare` (CorpusOptions', FilterOptions' and these), each default
    written here once; `train` takes the ones it offers from here (cllm/training/config.py). A kind (cllm/kinds.py)
    reads the ones that apply to it: text the tokenizer, corpus, filter and split options, images the image options
    and the split."""

    tokenizer: str = option(
        "char",
        "char, word, bpe, wordpiece, or a tokenizer file to use as it is (CLLM's, HuggingFace's "
        "tokenizer.json, BERT's vocab.txt, GPT-2's vocab.json, *.tiktoken); a folder of "
        "images is read as images: cllm/vision",
    )
    vocab_size: int | None = option(None, "ids in the vocabulary (none: the tokenizer kind's own: "
                                          + ", ".join(f"{kind} {size}" for kind, size in VOCAB_SIZES.items())
                                          + ", char every character)")
    val_fraction: float = option(0.1, "share of the data held out for validation (0 <= f < 1)")
    bpe_pattern: str = option("gpt4", "gpt4 or gpt2 pre-split (or a regex)")
    chat_tokens: bool = option(False, "char or bpe trained here: add ChatML's <|im_start|> and <|im_end|> as single "
                                      "ids and its chat template, so the model can be fine-tuned on conversations "
                                      "later (char also gets every printable ASCII character)")
    llmc: bool = option(False, "also write llm.c token files train_llmc.bin / val_llmc.bin")
    force: bool = option(False, "rebuild even when a cached result matches")
    image_size: int | None = option(
        None, "a folder of images: centre-crop and resize them to S x S pixels (none: their one size)")
    grayscale: bool = option(False, "a folder of images: read them as grayscale (automatic when every image is)")
    palette: int = option(16, "a folder of images: k-means colours, or grey levels for grayscale images")


@dataclass
class PreparedDataset:
    out_dir: str
    tokenizer: object  # the loaded tokenizer
    train_path: str
    val_path: str
    meta: dict
    cached: bool = False  # True when an earlier run's result was reused

    def train_tokens(self) -> np.ndarray:
        return read_token_file(self.train_path)

    def val_tokens(self) -> np.ndarray:
        return read_token_file(self.val_path)


def _hash_inputs(corpus, options: dict) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"prepare_version": PREPARE_VERSION, "options": options}, sort_keys=True).encode())
    root = os.path.dirname(next(iter(corpus.files))[0]) if len(corpus.files) == 1 else corpus.path
    for path, kind in corpus.files:
        h.update(b"\0file\0" + os.path.relpath(path, root).encode("utf-8", "surrogatepass") + b"\0" + kind.encode())
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).
    Training frees tables of many MB, and glibc keeps such freed memory mapped (its mmap threshold
    grows with each large free), so without this the encoding pass would start from that high mark."""
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        try:
            name = ctypes.util.find_library("c")
            trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
            if trim is not None:
                trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
                _malloc_trim = trim
        except (OSError, AttributeError):
            pass
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def _split_plan(lengths, val_fraction: float) -> tuple[int, int, float]:
    """(first val document, document split by position or -1, train fraction of that document).

    One document: split it by position. Several: the document boundary whose tail holds the
    fraction of characters closest to val_fraction; if even that is off by more than a factor 2
    (a few big documents), split the document that holds the (1 - val_fraction) point by position
    instead, so that val is never most of the data. `lengths`: a sequence of ints, or a DocLengths
    (cllm/data/corpus.py), read a chunk at a time (its file, past prepare's memory budget)."""
    n = len(lengths)
    if n == 1:
        return 1, 0, 1 - val_fraction
    if val_fraction == 0:
        return n, -1, 1.0

    def parts():  # the lengths as int64 arrays
        return lengths.chunks() if hasattr(lengths, "chunks") else [np.asarray(lengths, np.int64)]

    def chunks():  # (index of the chunk's first document, characters before it, prefix sums (m,) int64, lengths)
        first, before = 0, 0
        for c in parts():
            prefix = before + np.cumsum(c, dtype=np.int64)  # prefix[j]: characters in documents <= first + j
            yield first, before, prefix, c
            first, before = first + len(c), int(prefix[-1])

    total = sum(int(c.sum()) for c in parts())
    best, best_err, below = -1, None, 1  # below: boundaries k (characters before k) <= the target, k = 0 counted
    target = (1 - val_fraction) * total
    for first, _, prefix, _ in chunks():
        ks = prefix if first + len(prefix) < n else prefix[:-1]  # boundaries k = first+1 ..., never k = n
        if len(ks):
            err = np.abs((total - ks) / total - val_fraction)
            j = int(np.argmin(err))  # the first of equal ones: the smallest k, as min() over (err, k)
            if best_err is None or err[j] < best_err:
                best, best_err = first + 1 + j, err[j]
        below += int(np.searchsorted(prefix, target, side="right"))
    for first, before, prefix, _ in chunks():
        if first < best <= first + len(prefix):
            got = (total - prefix[best - first - 1]) / total
            break
    if val_fraction / 2 <= got <= 2 * val_fraction:
        return best, -1, 1.0
    s = min(max(below - 1, 0), n - 1)  # document holding the target point
    for first, before, prefix, c in chunks():
        if first <= s < first + len(c):
            start = before if s == first else prefix[s - first - 1]  # characters in documents < s
            return s + 1, s, float((target - start) / c[s - first])
    raise AssertionError("unreachable: s < n")


def _load_cached(out_dir: str, key: str):
    """The PreparedDataset in out_dir if its meta.json has this key and its files check out."""
    meta_path = os.path.join(out_dir, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("cache_key") != key:
        return None
    train_path, val_path = os.path.join(out_dir, "train.bin"), os.path.join(out_dir, "val.bin")
    try:
        if (read_token_header(train_path)["count"] != meta["train_tokens"]
                or read_token_header(val_path)["count"] != meta["val_tokens"]):
            return None
        tok = load_tokenizer(os.path.join(out_dir, "tokenizer.json"))
    except (CLLMError, KeyError):
        return None  # damaged cache: rebuild
    return PreparedDataset(out_dir, tok, train_path, val_path, meta, cached=True)


DATASET_FILES = ("meta.json", "tokenizer.json", "train.bin", "val.bin", "train_llmc.bin", "val_llmc.bin",
                 "train_mask.npy", "val_mask.npy", "train_starts.npy", "val_starts.npy",  # these four: chat
                 "filters.json", "documents.jsonl")  # the corpus filters' report


def refuse_foreign_directory(out_dir: str) -> None:
    """A dataset is (re)built only into a new, empty or dataset directory: files of anything else
    there would be mixed with (or lost among) the dataset's."""
    if not os.path.isdir(out_dir):
        return
    foreign = sorted(n for n in os.listdir(out_dir) if n not in DATASET_FILES and not n.endswith(".tmp"))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise DataError(f"the output directory {out_dir} holds files that are not a prepared dataset ({shown}); "
                        "choose a new or empty --out")


def prepare_dataset(data_path, out_dir, **options) -> PreparedDataset:
    """A token dataset in `out_dir` from the input at `data_path`, prepared by its kind (cllm/kinds.py): a
    corpus of text by prepare_text_dataset (below), a folder of images (or tokenizer "image") by
    cllm/vision/dataset.py. `options` are PrepareOptions' fields (their defaults for those left out); each
    kind reads the ones that apply to it."""
    opts = options_of(PrepareOptions, options, "prepare option")
    kind = kinds.for_input(data_path, opts.tokenizer)
    return kind.prepare(data_path, out_dir, opts)


def prepare_text_dataset(data_path, out_dir, opts: PrepareOptions) -> PreparedDataset:
    """Clean, tokenize and split the corpus at `data_path` into `out_dir` (see the module doc).
    `opts.vocab_size` None: the kind's own (VOCAB_SIZES), char every character. `opts.llmc` also writes
    llm.c token files (train_llmc.bin, val_llmc.bin). `opts.force` ignores the cache.
    `opts.tokenizer` may be a trained Tokenizer instead of a kind (fine-tuning: the checkpoint's): the corpus is
    encoded with it and none is trained."""
    given, tokenizer = _resolve_tokenizer(opts.tokenizer, opts.vocab_size, opts.val_fraction)
    out_dir = os.fspath(out_dir)
    corpus = corpus_at(data_path, opts, out_dir)  # its state past --filter-memory-mb: DIR/filters-spill-*.tmp
    try:
        return _prepare_corpus(corpus, data_path, out_dir, opts, given, tokenizer)
    finally:  # also on error or Ctrl-C (and a cached result: the file list may be on disk)
        if corpus.filters is not None:
            corpus.filters.close()


def _prepare_corpus(corpus, data_path, out_dir: str, opts: PrepareOptions, given, tokenizer: str) -> PreparedDataset:
    """prepare_text_dataset's work once the corpus is open: the cached dataset, or a new one."""
    vocab_size, val_fraction, progress = opts.vocab_size, opts.val_fraction, opts.progress
    options = _dataset_options(corpus, tokenizer, given, vocab_size, val_fraction, opts.bpe_pattern)
    if opts.chat_tokens:  # only when set: the cache keys of datasets without it stay as they were
        _check_chat_tokens(given, tokenizer)
        options["chat_tokens"] = True
    key = _hash_inputs(corpus, options) if corpus.files else ""
    if not opts.force and corpus.files:
        cached = _load_cached(out_dir, key)
        if cached is not None:
            if opts.llmc and not all(os.path.exists(os.path.join(out_dir, f"{split}_llmc.bin"))
                                for split in ("train", "val")):
                export_dataset_tokens(out_dir)
            return cached

    meta_path = _claim_output_dir(out_dir, None if corpus.filters is None else corpus.filters.spill.path)
    try:
        t0 = time.perf_counter()
        tok = _train_pass(corpus, tokenizer, given, vocab_size, opts.bpe_pattern, progress)
        if opts.chat_tokens and given is None:
            add_chat_tokens(tok)  # after training: the two ids (and char's extra characters) follow the corpus's
        stats, lengths = corpus.stats, corpus.doc_lengths  # pass 1's (pass 2 makes new ones)
        if corpus.filters is not None and corpus.filters.enabled:  # else the dataset's files are as before
            _write_filter_report(corpus.filters, out_dir)
        plan = _split_plan(lengths, val_fraction)  # where val starts
        eos = tok.eos_id if given is not None or tokenizer in ("word", "bpe", "wordpiece") else None
        train_path, val_path = os.path.join(out_dir, "train.bin"), os.path.join(out_dir, "val.bin")
        wt, wv = _encode_pass(corpus, tok, train_path, val_path, plan, eos, len(lengths), progress)
        if wt.count == 0:
            raise EmptyCorpusError(f"the corpus at {data_path} gives no training tokens; give it more text or lower "
                                   "--val-fraction")
        if val_fraction > 0 and wv.count == 0:
            raise EmptyCorpusError(f"the corpus at {data_path} is too small for a validation split; give it more "
                                   "text or use --val-fraction 0")
        tok.save(os.path.join(out_dir, "tokenizer.json"))
        meta = _dataset_meta(data_path, key, tokenizer, tok, wt, wv, plan, len(lengths), options, stats)
        if corpus.filters is not None:
            meta["languages"] = dict(corpus.filters.languages_seen.most_common())
            meta["filters"] = corpus.filters.counts_by_rule()
        meta["seconds"] = round(time.perf_counter() - t0, 3)
        ds = PreparedDataset(out_dir, tok, train_path, val_path, meta)
        if opts.llmc:
            export_dataset_tokens(out_dir)
        atomic_write_text(meta_path, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        return ds
    finally:  # also on error or Ctrl-C
        if corpus.filters is not None:
            corpus.filters.close()


def _resolve_tokenizer(tokenizer, vocab_size, val_fraction) -> tuple[object | None, str]:
    """(the given Tokenizer or None, the tokenizer kind), after checking the kind, vocab size and val fraction.
    `tokenizer` is a kind, a tokenizer file (imported) or a trained Tokenizer."""
    if isinstance(tokenizer, str) and tokenizer not in KINDS and os.path.exists(tokenizer):
        tokenizer = import_tokenizer(tokenizer)  # a tokenizer file: CLLM's, HuggingFace's, BERT's, GPT-2's, tiktoken's
    given, tokenizer = (None, tokenizer) if isinstance(tokenizer, str) else (tokenizer, tokenizer.kind)
    if tokenizer not in KINDS and given is None:
        raise TokenizerError(f"unknown tokenizer {tokenizer!r}; choose one of: {', '.join(KINDS)}, "
                             "or give a tokenizer file")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)):
        raise TokenizerError(f"vocab size must be an integer, got {vocab_size!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise DataError(f"val fraction must be a number in [0, 1), got {val_fraction!r}; e.g. --val-fraction 0.1")
    return given, tokenizer


def _check_chat_tokens(given, tokenizer: str) -> None:
    """--chat-tokens gives the chat tokens to a tokenizer trained here; a given one (a file, --init-from's) must
    have them already, as a trained model's embedding cannot grow."""
    if given is not None:
        if not all(t in (getattr(given, "special_tokens", None) or {}) for t in CHATML_TOKENS):
            raise TokenizerError("--chat-tokens adds the chat tokens to a tokenizer trained here; the given "
                                 f"{given.kind} tokenizer lacks {' and '.join(CHATML_TOKENS)}, so use --tokenizer "
                                 "char or bpe with --chat-tokens instead")
    elif tokenizer not in ("char", "bpe"):
        raise TokenizerError(f"--chat-tokens needs --tokenizer char or bpe (a {tokenizer} tokenizer has no single-id "
                             "special tokens for a chat template)")


def _dataset_options(corpus, tokenizer: str, given, vocab_size, val_fraction, bpe_pattern) -> dict:
    """The options the dataset depends on (meta.json's "options", hashed into the cache key)."""
    options = {"tokenizer": tokenizer, "vocab_size": vocab_size, "val_fraction": float(val_fraction),
               "encoding": corpus.encoding, "dedupe": bool(corpus.dedupe), "cleaning": corpus.cleaning}
    if tokenizer == "bpe":
        options["bpe_pattern"] = bpe_pattern
    if corpus.filters is not None and corpus.filters.enabled:  # absent otherwise: the key of a dataset as before
        options["filters"] = corpus.filters.settings()
    if given is not None:  # the cache is valid for this tokenizer only
        options["tokenizer_sha256"] = hashlib.sha256(json.dumps(given._to_dict(), sort_keys=True).encode()).hexdigest()
    return options


def _claim_output_dir(out_dir: str, spill: str | None = None) -> str:
    """Make out_dir ready to be (re)built: refuse foreign files, create it, delete its meta.json (from here on
    the directory is not a valid cache until the build finishes), and the spill directories of killed runs, not
    `spill` (this run's, where its file list may be already). Returns meta.json's path."""
    refuse_foreign_directory(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        meta_path = os.path.join(out_dir, "meta.json")
        if os.path.exists(meta_path):
            os.unlink(meta_path)  # from here on the directory is not a valid cache until we finish
        for name in os.listdir(out_dir):  # the filters' state on disk a killed run left (cllm/data/filters/spill.py)
            if (name.startswith(SPILL_PREFIX) and name.endswith(".tmp")
                    and (spill is None or os.path.join(out_dir, name) != spill)):
                shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    except OSError as exc:
        raise DataError(f"cannot write to output directory {out_dir}: {exc.strerror}; choose another --out") from None
    return meta_path


def _write_filter_report(filters, out_dir: str) -> None:
    """DIR/filters.json (FilterPipeline.report: what each rule removed) and DIR/documents.jsonl (one line per
    document read, in order: its source, detected language and the rule that removed it, null when kept), after
    the pass that decided them."""
    atomic_write_text(os.path.join(out_dir, "filters.json"),
                      json.dumps(filters.report(), indent=1, ensure_ascii=False) + "\n")
    path = os.path.join(out_dir, "documents.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as f:  # streamed: one line per document
        for source, lang, score, rule in filters.documents:
            f.write(json.dumps({"source": filters.relative(source), "language": lang, "language_score": score,
                                "removed_by": rule}, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def _train_pass(corpus, tokenizer: str, given, vocab_size, bpe_pattern: str, progress: bool):
    """Pass 1: train the tokenizer (or use the given one); fills corpus.stats and corpus.doc_lengths."""
    kw = {"progress": progress}
    if tokenizer == "bpe":
        kw["pattern"] = bpe_pattern
    if given is None:
        tok = train_tokenizer(tokenizer, corpus, vocab_size, **kw)
    else:
        for _ in corpus:  # the pass that fills corpus.stats and corpus.doc_lengths
            pass
        tok = given
    _release_free_memory()
    return tok


def _encode_pass(corpus, tok, train_path: str, val_path: str, plan: tuple[int, int, float], eos, n_docs: int,
                 progress: bool):
    """Pass 2: encode each of the `n_docs` documents into train.bin / val.bin as `plan` (_split_plan's)
    splits them; returns the two (closed) TokenFileWriters, whose counts and dtype meta.json records."""
    first_val, straddle, straddle_frac = plan
    V = tok.vocab_size
    with TokenFileWriter(train_path, V) as wt, TokenFileWriter(val_path, V) as wv, \
            tqdm(total=n_docs, unit="doc", desc="encoding", disable=None if progress else True, leave=False) as bar:
        corpus.progress = False
        since_trim = 0
        for i, doc in enumerate(corpus):
            # ids piece by piece ((tokens,) int32 each, see Tokenizer.encode_pieces), EOS (if any) after them
            end = [] if eos is None else [eos]
            if i == straddle:
                _encode_split_document(tok, doc, end, straddle_frac, wt, wv)
            else:
                w = wt if i < first_val else wv
                for a in tok.encode_pieces(doc):
                    w.write(a)
                w.write(end)
            since_trim += len(doc)
            del doc
            if since_trim >= 1 << 20:  # a big document's copies go back before the next is read
                _release_free_memory()  # (at most once a MB of text: many small documents stay cheap)
                since_trim = 0
            bar.update(1)
    return wt, wv


def _encode_split_document(tok, doc: str, end: list, train_frac: float, wt, wv) -> None:
    """Split this document by token position: count its tokens first, then write the first `train_frac`
    of them (with its EOS `end`) to train (wt), the rest to val (wv)."""
    seen = tok._encoded_tokens, tok._encoded_unknown
    n_doc = sum(len(a) for a in tok.encode_pieces(doc))
    tok._encoded_tokens, tok._encoded_unknown = seen
    n_train = int((n_doc + len(end)) * train_frac)
    done = 0
    for a in tok.encode_pieces(doc):
        k = min(max(n_train - done, 0), len(a))
        wt.write(a[:k])
        wv.write(a[k:])
        done += len(a)
    (wv if n_train <= n_doc else wt).write(end)


def _dataset_meta(data_path, key: str, tokenizer: str, tok, wt, wv, plan: tuple[int, int, float], n_docs: int,
                  options: dict, stats) -> dict:
    """meta.json's content but its "seconds" (the caller times the build)."""
    first_val, straddle, _ = plan
    return {
        "format": "cllm-dataset",
        "version": PREPARE_VERSION,
        "cache_key": key,
        "source": os.path.abspath(os.fspath(data_path)),
        "tokenizer": tokenizer,
        "vocab_size": tok.vocab_size,
        "dtype": str(np.dtype(wt.dtype).name),
        "train_tokens": wt.count,
        "val_tokens": wv.count,
        "split": "documents" if straddle < 0 else ("position" if n_docs == 1 else "documents+position"),
        "val_first_document": first_val,
        "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id, "unk_id": tok.unk_id,
        "options": options,
        "corpus": stats.as_dict(),
    }


def summary(ds: PreparedDataset) -> str:
    """What was prepared (or reused), for `cli.py prepare`: the corpus statistics and the token files' sizes."""
    m = ds.meta
    c = m["corpus"]
    corpus = (f"corpus: {c['documents']:,} documents from {c['files']:,} files, {c['characters']:,} characters, "
              f"{c['lines']:,} lines, {c['tokens']:,} words, vocabulary {c['vocabulary']:,}, "
              f"{c['avg_chars_per_document']:,.0f} characters per document"
              + (f"; skipped {c['skipped']}" if c["skipped"] else "")
              + (f"; {c['duplicates']} duplicates dropped" if c["duplicates"] else ""))
    filtered = m.get("filters")
    if filtered is not None and "filters" in m["options"]:  # filters on (else: as before, the report aside)
        rules = [f"  {rule}: " + ", ".join(
            [f"{c['documents']:,} documents"] * bool(c["documents"]) + [f"{c['lines']:,} lines"] * bool(c["lines"])
            + [f"{c['bytes']:,} bytes"]) for rule, c in filtered.items()]
        langs = ", ".join(f"{lang} {n:,}" for lang, n in list(m.get("languages", {}).items())[:8])
        corpus += (f"\nfilters ({', '.join(m['options']['filters']['filters']) or 'none'}; "
                   f"report: {os.path.join(ds.out_dir, 'filters.json')}): "
                   + ("removed\n" + "\n".join(rules) if rules else "nothing removed")
                   + (f"\nlanguages (documents kept): {langs}" if langs else ""))
    state = "reused cached dataset" if ds.cached else f"prepared in {m['seconds']:.1f} s"
    return (f"{corpus}\n{state}: {ds.out_dir} ({m['tokenizer']} tokenizer, {m['vocab_size']:,} ids, {m['dtype']}): "
            f"train.bin {m['train_tokens']:,} tokens, val.bin {m['val_tokens']:,} tokens")


__all__ = ["PrepareOptions", "PreparedDataset", "prepare_dataset", "prepare_text_dataset", "TokenFileError"]
