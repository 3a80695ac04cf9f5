"""The image dataset kind (cllm/kinds.py): a folder of images (or of class folders) becomes a token dataset
of image records; its model trains on one record per window, validates in bits per dimension, prints a
sampled image as text, and the server offers POST /v1/images/generations for it. cllm/kinds.py imports
this module by name on its first lookup, which is where the kind is registered."""
from __future__ import annotations

from cllm.kinds import DatasetKind, register
from cllm.vision.dataset import evaluate_records, holds_images, image_seq_len, is_image_source, prepare_image_dataset
from cllm.vision.dataset import summary as dataset_summary
from cllm.vision.likelihood import evaluate_checkpoint
from cllm.vision.sampling import sample_picture, sample_pngs
from cllm.vision.tokenizer import ImageTokenizer


def prepare(data_path, out_dir, options):
    """prepare_image_dataset with prepare_dataset's PrepareOptions (cllm/data/prepare.py): the image options,
    val_fraction, force and progress apply; the text ones (tokenizer, vocab_size, cleaning, ...) do not."""
    return prepare_image_dataset(data_path, out_dir, options)


def prepared_summary(ds) -> str:
    m = ds.meta
    return (f"{dataset_summary(m)}; {'reused' if ds.cached else 'prepared'} {ds.out_dir}: "
            f"train.bin {m['train_tokens']:,} tokens, val.bin {m['val_tokens']:,} tokens, {m['vocab_size']} ids")


def validate(model, tokenizer, tokens, B: int, T: int) -> dict:
    r = evaluate_records(model, tokens, tokenizer, B)
    return {"val_loss": r["loss"], "val_bits_per_dim": r["bits_per_dim"]}


IMAGE = register(DatasetKind(
    name="image",
    tokenizers={"image": ImageTokenizer},
    recognises=is_image_source,
    claims_folder=holds_images,
    prepare=prepare,
    summary=prepared_summary,
    seq_len=image_seq_len,  # one record: a different --seq-len is refused
    align=lambda tokenizer: tokenizer.record_len,  # every window starts at a record
    validate=validate,
    sample=sample_picture,
    evaluate=evaluate_checkpoint,
    sample_pngs=sample_pngs,
))
