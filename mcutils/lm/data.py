"""Text in, 64-token blocks out: loading the splits, cutting blocks, storing them as Arrow.

The paper concatenates wikitext-2's text and cuts it into blocks of 64 tokens
(Shumailov et al., §4); every block is one training sequence, and the
generated continuation of a block is one sequence of the next generation's
data.  Blocks are stored as Arrow files (no pickle) with one fixed-size list
column ``input_ids``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import runs, validate
from .hub import HubUnavailable, hub_offline, offline_advice
from .settings import SYNTHETIC, WIKITEXT, ChainSettings

SPLITS = ("train", "validation", "test")
# The synthetic text of each split is sample ``SPLIT_SAMPLES[split]`` of the language
# (``default_rng([language seed, sample, STREAM_TEXT])``, :mod:`mcutils.lm.language`).
SPLIT_SAMPLES = {"train": 1, "validation": 2, "test": 3}


def cut_blocks(token_ids, block_size: int) -> np.ndarray:
    """Cut one long token stream into ``(n_blocks, block_size)``; the remainder is dropped."""
    validate.integer("block_size", block_size, minimum=1)
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    n_blocks = len(ids) // block_size
    if n_blocks == 0:
        raise validate.ParameterError(
            f"{len(ids)} tokens do not fill one block of block_size={block_size}")
    return ids[: n_blocks * block_size].reshape(n_blocks, block_size)


def tokenize_and_cut(texts, tokenizer, block_size: int, batch_size: int = 1000) -> np.ndarray:
    """Tokenize every line with the tokenizer's own defaults, concatenate, cut into blocks.

    OPT's tokenizer starts every line with ``</s>``, as Hugging Face's
    ``run_clm`` recipe keeps it; the synthetic tokenizer adds nothing.
    """
    texts = list(texts)
    stream: list[int] = []
    for start in range(0, len(texts), batch_size):
        for ids in tokenizer(texts[start:start + batch_size])["input_ids"]:
            stream.extend(ids)
    return cut_blocks(stream, block_size)


def synthetic_texts(settings: ChainSettings, language=None) -> dict[str, list[str]]:
    """The synthetic language's train / validation / test text (fixed by the language seed)."""
    from .language import SyntheticLanguage
    language = language or SyntheticLanguage(settings.language)
    corpus = settings.corpus
    return {split: language.sample_text(getattr(corpus, f"{split}_tokens"), seed=SPLIT_SAMPLES[split],
                                        words_per_line=corpus.words_per_line,
                                        document_length=document_length(settings))
            for split in SPLITS}


def document_length(settings: ChainSettings) -> int:
    """Synthetic documents span 16 blocks exactly, so no block holds two topics."""
    return 16 * settings.block_size


def load_texts(settings: ChainSettings) -> dict[str, list[str]]:
    """The three splits as lists of lines: synthetic, wikitext-2-raw-v1, a hub dataset or a folder.

    A real dataset goes through ``load_dataset`` exactly as a user online
    calls it; a local folder with ``train`` / ``validation`` / ``test`` files
    (text or parquet) goes through the same call.
    """
    if settings.dataset == SYNTHETIC:
        return synthetic_texts(settings)
    from datasets import load_dataset

    name, config = settings.dataset, settings.dataset_config
    if name == WIKITEXT and config is None:
        config = "wikitext-2-raw-v1"
    try:
        splits = load_dataset(name, config) if config else load_dataset(name)
    except Exception as exc:  # the hub libraries raise many types; say what to do
        if hub_offline() and not os.path.isdir(name):
            raise HubUnavailable(offline_advice(f"dataset {name!r}")) from exc
        raise validate.ParameterError(f"could not load dataset {name!r} ({config}): {exc}") from exc
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise validate.ParameterError(
            f"dataset {name!r} has splits {list(splits)}; the chain needs {list(SPLITS)} (missing {missing})")
    column = "text" if "text" in splits["train"].column_names else splits["train"].column_names[0]
    return {split: list(splits[split][column]) for split in SPLITS}


def load_blocks(settings: ChainSettings, tokenizer) -> dict[str, np.ndarray]:
    """Every split cut into ``settings.block_size``-token blocks (training set capped by ``max_train_blocks``)."""
    texts = load_texts(settings)
    blocks = {split: tokenize_and_cut(texts[split], tokenizer, settings.block_size) for split in SPLITS}
    if settings.max_train_blocks is not None:
        blocks["train"] = blocks["train"][: settings.max_train_blocks]
    return blocks


# -- Arrow storage -----------------------------------------------------------------

def save_blocks(path: str | os.PathLike, blocks: np.ndarray, **columns) -> Path:
    """Write blocks (and optional per-block float columns) as an Arrow IPC file, atomically."""
    import pyarrow as pa

    blocks = np.ascontiguousarray(blocks, dtype=np.int32)
    flat = pa.array(blocks.reshape(-1), type=pa.int32())
    table = {"input_ids": pa.FixedSizeListArray.from_arrays(flat, blocks.shape[1])}
    for name, values in columns.items():
        table[name] = pa.array(np.asarray(values, dtype=np.float64))
    return save_table(path, pa.table(table))


def save_table(path: str | os.PathLike, table) -> Path:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return runs.atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_table(path: str | os.PathLike):
    """An Arrow IPC file; a missing or damaged one raises :class:`~mcutils.runs.CorruptRunError` naming it."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    except FileNotFoundError:
        raise runs.CorruptRunError(f"{path} is missing; delete its generation folder to recompute it") from None
    except (pa.ArrowException, OSError) as exc:
        raise runs.CorruptRunError(f"{path} is damaged ({type(exc).__name__}: {exc}); delete it (or its "
                                   "generation folder) to recompute it") from None


def count_rows(path: str | os.PathLike) -> int:
    """The number of rows of an Arrow IPC file (reads the footer and record batch headers only)."""
    return read_table(path).num_rows


def read_blocks(path: str | os.PathLike) -> np.ndarray:
    """The ``input_ids`` column of an Arrow file written by :func:`save_blocks`."""
    table = read_table(path)
    if "input_ids" not in table.column_names:
        raise runs.CorruptRunError(f"{path} has no input_ids column (columns {table.column_names}); delete it "
                                   "(or its generation folder) to recompute it")
    column = table.column("input_ids").combine_chunks()
    width = column.type.list_size
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.int64).reshape(-1, width)


def read_columns(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every float column of an Arrow file (per-sequence metrics)."""
    table = read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names if name != "input_ids"}
