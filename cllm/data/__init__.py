"""The data pipeline: files -> cleaned documents -> token datasets (memory-mapped .bin files).

    corpus = load_corpus("books/")                       # streams documents, .stats
    ds = prepare_dataset("books/", "out/", tokenizer="bpe", vocab_size=4096)   # PrepareOptions' fields
    train = read_token_file(ds.train_path)               # np.memmap of uint16/uint32 ids
"""
from cllm.data.clean import CleaningOptions, clean_text, strip_gutenberg
from cllm.data.corpus import Corpus, CorpusOptions, CorpusStats, load_corpus, open_corpus
from cllm.data.errors import CorpusNotFoundError, EmptyCorpusError, TextDecodeError, TokenFileError
from cllm.data.prepare import PreparedDataset, PrepareOptions, prepare_dataset
from cllm.data.tokenfile import read_token_file, write_token_file

__all__ = [
    "CleaningOptions", "Corpus", "CorpusNotFoundError", "CorpusOptions", "CorpusStats", "EmptyCorpusError",
    "PrepareOptions", "PreparedDataset", "TextDecodeError",
    "TokenFileError", "clean_text", "load_corpus", "open_corpus", "prepare_dataset", "read_token_file",
    "strip_gutenberg", "write_token_file",
]
