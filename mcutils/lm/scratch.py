"""Gerstgrasser et al.'s procedure: pretrain a fresh model from scratch every generation, sample, repeat.

Beside :mod:`mcutils.lm.chain` (Shumailov et al.: fine-tune one pre-trained
model every generation, regenerate by beam search), this is the procedure of
Gerstgrasser et al. (arXiv 2404.01413, Table 2): generation ``g`` initialises
a *new* model from its config (seeded) and trains it from scratch for
``epochs`` (paper: 1) on its training set; the synthetic set the next
generation trains on is drawn from it by **ancestral sampling** at
``temperature`` (pure sampling: every token from ``softmax(logits / T)``, no
top-k, no nucleus), as many text tokens as the real training set, in
sequences of ``block_size`` tokens started from BOS
(:mod:`mcutils.lm.scratch_settings` says why).

Which sequences generation ``g`` trains on is the policy (``g = 0`` always
trains on the real data; ``N`` real sequences):

* ``replace``: the ``N`` sequences model ``g - 1`` drew;
* ``accumulate``: the real ones and every synthetic set so far, ``(g + 1)·N``;
* ``accumulate-subsample``: a uniform ``N`` of that pool;
* ``replace-grown``: ``(g + 1)·N`` sequences all drawn by model ``g - 1``
  (replace at accumulate's size: the paper's control).

With one epoch nothing is selected: the trained model is the model (the
Trainer's best-epoch bookkeeping of :func:`mcutils.lm.train.fine_tune` is
reused, and with ``epochs > 1`` keeps the epoch of lowest validation loss).

Runs folder (the **contract** of :mod:`mcutils.lm.chain`):
``<runs_dir>/<run name>/gen_<NN>/metrics.json`` is written atomically once
generation ``NN`` is complete, with a manifest (files, row counts, SHA-256
hashes, the hashes of the synthetic sets it trained on) checked before any
new work.  Inside a generation the synthetic set it trains on
(``samples.arrow``) and its model (safetensors) are saved as soon as they
exist, so a killed run resumes mid-generation and ends with the same numbers.
Generation 0's model is kept (sibling chains adopt it), and so is the newest
complete generation's (the next one samples from it); the others are deleted
once the next generation is complete.  A chain's folder is locked while written.

Generation 0 (the model trained on the real data) depends on neither the
policy nor the temperature: chains that differ only there share it (a
sibling's complete, verified generation 0 is copied, as in the fine-tuning
chain), so a chapter trains it once.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import generational, runs, validate
from ..runs import CorruptRunError
from .chain import _copy_dir_atomically, _jsonable, _timed, metric_series, mix_training_data
from .hub import HubUnavailable, check_wanted, hub_offline, offline_advice
from .scratch_settings import (GPT2, LLAMA, POLICIES, PROFILES, SYNTHETIC, ScratchSettings, for_profile,
                               generation0_view)
from .settings import check_n_generations, check_precision

SETTINGS_FILE = "settings.json"
SAMPLES = "samples.arrow"      # gen_NN, NN >= 1: the synthetic set drawn by model NN - 1 (new this generation)
MODEL = "model"
TRAINED = "training.json"      # inside gen_NN/model: written once the model is saved
TIMING = "timing.json"
MANIFEST = "manifest"
REAL_SOURCE = -1               # provenance of a real sequence; model g's samples are labelled g
SPLITS = ("train", "validation", "test")
# The synthetic corpus' splits are samples of the language (default_rng([language seed, sample, STREAM_TEXT])).
SPLIT_SAMPLES = {"train": 11, "validation": 12, "test": 13}
DOCUMENT_SEQUENCES = 16        # a synthetic document spans 16 sequences exactly: no sequence holds two topics

# Seed streams (the book's convention: SeedSequence([seed, STREAM, g, ...])); generation g draws from its
# own streams only, so a resumed chain makes the same draws as an uninterrupted one.  The data policy's
# draws use mcutils.lm.chain.STREAM_TRAINING_DATA (through mix_training_data).
STREAM_INIT = 0x5C01           # the fresh model's initial weights
STREAM_TRAINING = 0x5C02       # the Trainer's seed (data order, dropout)
STREAM_SAMPLING = 0x5C03       # ancestral sampling: one seed a batch, [seed, STREAM_SAMPLING, g, batch]


def _seed_of(*key: int) -> int:
    """An int below 2**32 from ``SeedSequence(key)`` (what torch and Trainer's set_seed take)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


# -- models ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Vocabulary:
    """What the model needs to know of the tokenizer."""

    size: int
    bos_token_id: int
    eos_token_id: int


def model_config(settings: ScratchSettings, vocabulary: Vocabulary):
    """The transformers config of the chain's model family at the chain's shape."""
    s = settings
    if s.family == GPT2:
        from transformers import GPT2Config
        return GPT2Config(vocab_size=vocabulary.size, n_positions=s.block_size, n_embd=s.hidden_size,
                          n_layer=s.n_layers, n_head=s.n_heads, n_inner=s.intermediate_size,
                          resid_pdrop=s.dropout, embd_pdrop=s.dropout, attn_pdrop=s.dropout,
                          bos_token_id=vocabulary.bos_token_id, eos_token_id=vocabulary.eos_token_id)
    if s.family == LLAMA:
        from transformers import LlamaConfig
        return LlamaConfig(vocab_size=vocabulary.size, hidden_size=s.hidden_size,
                           intermediate_size=s.intermediate_size, num_hidden_layers=s.n_layers,
                           num_attention_heads=s.n_heads, num_key_value_heads=s.n_heads,
                           max_position_embeddings=s.block_size, attention_dropout=s.dropout,
                           tie_word_embeddings=True, bos_token_id=vocabulary.bos_token_id,
                           eos_token_id=vocabulary.eos_token_id)
    raise validate.ParameterError(f"family must be one of {[GPT2, LLAMA]}, got {s.family!r}")


def _model_class(settings: ScratchSettings):
    from transformers import GPT2LMHeadModel, LlamaForCausalLM
    return GPT2LMHeadModel if settings.family == GPT2 else LlamaForCausalLM


def fresh_model(settings: ScratchSettings, vocabulary: Vocabulary, generation: int):
    """A new model from its config, its initial weights seeded by ``(seed, STREAM_INIT, generation)``."""
    import torch

    from .model import quiet_transformers

    config = model_config(settings, vocabulary)
    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_of(settings.seed, STREAM_INIT, generation))
        model = _model_class(settings)(config)
    return model.float()


def n_parameters(settings: ScratchSettings, vocab_size: int) -> int:
    """The model's parameter count (tied embeddings counted once), built on the meta device: no memory."""
    import torch

    vocabulary = Vocabulary(vocab_size, 0, 0)
    with torch.device("meta"):
        model = _model_class(settings)(model_config(settings, vocabulary))
    return int(sum(p.numel() for p in model.parameters()))


# -- the tokenizer and the real data ------------------------------------------------------

def load_tokenizer(settings: ScratchSettings):
    """The synthetic language's word-level tokenizer, or ``AutoTokenizer.from_pretrained(settings.tokenizer)``."""
    if settings.is_synthetic:
        from .language import SyntheticLanguage
        return SyntheticLanguage(settings.language).tokenizer()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(settings.tokenizer)
    except OSError as exc:
        if hub_offline() and not os.path.isdir(settings.tokenizer):
            raise HubUnavailable(offline_advice(f"tokenizer {settings.tokenizer!r}")) from exc
        raise validate.ParameterError(f"could not load tokenizer {settings.tokenizer!r}: {exc}") from exc


def vocabulary_of(tokenizer) -> Vocabulary:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise validate.ParameterError("the tokenizer has neither a BOS nor an EOS token to start sequences with")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    return Vocabulary(len(tokenizer), int(bos), int(eos))


def _with_bos(text_blocks: np.ndarray, bos: int) -> np.ndarray:
    return np.concatenate([np.full((len(text_blocks), 1), bos, dtype=np.int64), text_blocks], axis=1)


def synthetic_blocks(settings: ScratchSettings, language, bos: int) -> dict[str, np.ndarray]:
    """The three splits of the synthetic corpus: BOS, then ``block_size - 1`` word ids, per sequence.

    Each split is a sample of documents of ``DOCUMENT_SEQUENCES`` sequences
    (topics balanced), cut exactly at sequence boundaries, so every sequence
    is stationary text of one topic and its exact likelihood is known.
    """
    from .language import N_SPECIAL

    length = settings.text_length
    out = {}
    for split in SPLITS:
        tokens = settings.train_tokens if split == "train" else settings.eval_tokens
        n_blocks = tokens // length
        n_documents = -(-n_blocks // DOCUMENT_SEQUENCES)
        ids = language.sample_ids(n_documents, DOCUMENT_SEQUENCES * length, seed=SPLIT_SAMPLES[split])
        text = (ids.reshape(-1, length)[:n_blocks] + N_SPECIAL).astype(np.int64)
        out[split] = _with_bos(text, bos)
    return out


def hub_blocks(settings: ScratchSettings, tokenizer, vocabulary: Vocabulary, progress: bool = True):
    """A hub dataset's splits (TinyStories: ``train``; ``validation`` split into test and validation).

    Every story is tokenized without special tokens and followed by EOS; the
    stories form one stream cut into pieces of ``block_size - 1`` tokens,
    each behind a BOS (GPT-2's BOS and EOS are the same token).  The
    dataset's ``validation`` split gives the test sequences (its first
    ``eval_tokens``) and, after them, the validation sequences.
    """
    from datasets import load_dataset
    from tqdm.auto import tqdm

    try:
        splits = load_dataset(settings.dataset)
    except Exception as exc:  # the hub libraries raise many types; say what to do
        if hub_offline() and not os.path.isdir(settings.dataset):
            raise HubUnavailable(offline_advice(f"dataset {settings.dataset!r}")) from exc
        raise validate.ParameterError(f"could not load dataset {settings.dataset!r}: {exc}") from exc
    for needed in ("train", "validation"):
        if needed not in splits:
            raise validate.ParameterError(f"dataset {settings.dataset!r} has splits {list(splits)}; the chain "
                                          f"needs 'train' and 'validation'")
    length = settings.text_length

    def stream(split, max_tokens):
        data = splits[split]
        column = "text" if "text" in data.column_names else data.column_names[0]
        parts, total = [], 0
        bar = tqdm(total=max_tokens, desc=f"tokenize {split}", unit="tok", disable=not progress, leave=False)
        for start in range(0, len(data), 10_000):
            batch = tokenizer(data[start:start + 10_000][column], add_special_tokens=False)["input_ids"]
            for ids in batch:
                piece = np.asarray(ids + [vocabulary.eos_token_id], dtype=np.int32)
                parts.append(piece)
                total += len(piece)
                bar.update(len(piece))
            if max_tokens is not None and total >= max_tokens:
                break
        bar.close()
        ids = np.concatenate(parts).astype(np.int64)
        n_blocks = (len(ids) if max_tokens is None else min(len(ids), max_tokens)) // length
        return ids[:n_blocks * length].reshape(n_blocks, length)

    train = stream("train", settings.train_tokens)
    held_out = stream("validation", 2 * settings.eval_tokens)
    n_eval = settings.eval_tokens // length
    if len(held_out) < 2:
        raise validate.ParameterError(f"dataset {settings.dataset!r}: its validation split is too short")
    n_eval = min(n_eval, len(held_out) // 2)
    return {"train": _with_bos(train, vocabulary.bos_token_id),
            "test": _with_bos(held_out[:n_eval], vocabulary.bos_token_id),
            "validation": _with_bos(held_out[n_eval:2 * n_eval], vocabulary.bos_token_id)}


def source_token_log_probs(language, blocks: np.ndarray) -> np.ndarray:
    """The source's exact ``log p(x_t | BOS, x_0 … x_{t-1})`` of every text token: ``(n, block_size - 1)``.

    A sequence is a stretch of a document of a uniformly random topic ``z``,
    starting in the topic's stationary law, so its first word has
    probability ``mean_z π_z(x_0)`` and every later one the exact Bayes
    update of :meth:`~mcutils.lm.language.SyntheticLanguage.token_log_probs`
    (whose topic prior ``∝ π_z(x_0)`` is the posterior after that first word).
    A row with a token that is no word (a special token) is ``-inf`` throughout.
    """
    from .language import N_SPECIAL

    text = np.asarray(blocks, dtype=np.int64)[:, 1:]
    words = text - N_SPECIAL
    valid = np.all((words >= 0) & (words < language.spec.n_words), axis=1)
    first = np.full(len(text), -np.inf)
    first[valid] = np.log(language.stationary.mean(axis=0)[words[valid, 0]])
    out = np.full(text.shape, -np.inf)
    out[:, 0] = first
    if text.shape[1] > 1:
        rest = language.token_log_probs(np.where(valid[:, None], text, N_SPECIAL))
        out[valid, 1:] = rest[valid]
    out[~valid] = -np.inf
    return out


def true_cross_entropy(language, blocks: np.ndarray) -> dict:
    """Mean ``-log p_source`` per text token of ``blocks`` (nats), over the sequences made only of words.

    A special token (BOS, padding, ...) has probability 0 under the source, so a
    sequence holding one has no finite true cross-entropy: it is left out of
    the mean, and counted in ``non_word_share`` (sequences) and
    ``non_word_token_share`` (tokens).  A model samples such tokens only from
    the little mass it still gives them (it never saw one as a target).
    """
    from .language import N_SPECIAL
    from .metrics import summary

    log_probs = source_token_log_probs(language, blocks)
    finite = np.isfinite(log_probs).all(axis=1)
    per_sequence = -log_probs[finite].mean(axis=1) if finite.any() else np.zeros(0)
    text = np.asarray(blocks)[:, 1:]
    return {"mean": float(-log_probs[finite].mean()) if finite.any() else None,
            "per_sequence": summary(per_sequence), "non_word_share": float(1 - finite.mean()),
            "non_word_token_share": float(np.mean((text < N_SPECIAL) | (text >= N_SPECIAL + language.spec.n_words)))}


# -- ancestral sampling ------------------------------------------------------------------

def next_token_probabilities(logits, temperature: float):
    """``softmax(logits / T)``: the law every token is drawn from (no top-k, no top-p, no penalty)."""
    import torch
    return torch.softmax(logits.float() / float(temperature), dim=-1)


def ancestral_sample(model, n_sequences: int, block_size: int, *, bos_token_id: int, temperature: float,
                     seed_key: tuple, batch_size: int = 256, device: str = "cpu", progress: bool = False,
                     description: str = "sample") -> np.ndarray:
    """``n_sequences`` sequences of ``block_size`` tokens: BOS, then tokens drawn one by one.

    Pure ancestral sampling: token ``t`` is drawn from
    :func:`next_token_probabilities` of the model's logits given the tokens
    before it (the key/value cache carries the context), by
    ``torch.multinomial`` with a ``torch.Generator`` seeded per batch from
    ``SeedSequence([*seed_key, batch])``, so the draws depend on the seed and
    the batch size only (not on what else ran in the process).  Hugging
    Face's ``generate`` would need ``top_k=0`` (its default 50 truncates) and
    seeds the global generator; this loop has neither pitfall.
    """
    import torch
    from tqdm.auto import tqdm

    validate.positive_int("n_sequences", n_sequences)
    validate.number("temperature", temperature, minimum=0.0, strict_minimum=True)
    model.eval().to(device)
    out = np.empty((n_sequences, block_size), dtype=np.int64)
    starts = list(range(0, n_sequences, batch_size))
    with torch.no_grad():
        for batch, start in enumerate(tqdm(starts, desc=description, unit="batch", leave=False,
                                           disable=not progress)):
            size = min(batch_size, n_sequences - start)
            generator = torch.Generator(device=device).manual_seed(_seed_of(*seed_key, batch))
            ids = torch.full((size, block_size), bos_token_id, dtype=torch.long, device=device)
            past = None
            for t in range(1, block_size):
                output = model(input_ids=ids[:, t - 1:t], cache=past, use_cache=True)
                past = output.cache
                probs = next_token_probabilities(output.logits[:, -1], temperature)
                ids[:, t:t + 1] = torch.multinomial(probs, 1, generator=generator)
            out[start:start + size] = ids.cpu().numpy()
    return out


# -- reading a chain back ------------------------------------------------------------

@dataclass
class ScratchResult:
    """A from-scratch chain on disk: its settings and one metrics dict per complete generation."""

    run_dir: Path
    settings: ScratchSettings
    metrics: list[dict]

    @property
    def n_generations(self) -> int:
        """Refits after generation 0: ``len(metrics) - 1``."""
        return len(self.metrics) - 1

    def series(self, *keys) -> np.ndarray:
        """One number per generation, e.g. ``series("test_cross_entropy")`` or
        ``series("synthetic", "true_cross_entropy", "mean")`` (NaN where absent, e.g. generation 0)."""
        return metric_series(self.metrics, *keys)

    def samples(self, generation: int) -> np.ndarray:
        """The synthetic set drawn for generation ``generation`` (by model ``generation - 1``)."""
        from .data import read_blocks
        return read_blocks(runs.generation_dir(self.run_dir, generation) / SAMPLES)


def chain_dir(settings: ScratchSettings, runs_dir: str | Path | None = "", profile: str = "quick") -> Path:
    return runs.resolve_runs_dir(runs_dir, profile) / settings.run_name


def load_scratch_chain(run_dir: str | Path, n_generations: int | None = None) -> ScratchResult:
    """Read a chain's complete generations, up to generation ``n_generations`` (no computation)."""
    run_dir = Path(run_dir)
    settings = ScratchSettings.from_dict(runs.read_json(run_dir / SETTINGS_FILE))
    metrics = [{k: v for k, v in m.items() if k != MANIFEST} for m in runs.load_metrics(run_dir, n_generations)]
    return ScratchResult(run_dir, settings, metrics)


# -- verifying what is on disk ---------------------------------------------------------

def _rel(run_dir: Path, path: Path) -> str:
    return path.relative_to(run_dir).as_posix()


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / MODEL).rglob("*") if p.is_file())


def build_manifest(run_dir: Path, g: int) -> dict:
    """What generation ``g`` holds (files, rows, SHA-256) and the synthetic sets it was trained on."""
    from .data import count_rows

    folder = runs.generation_dir(run_dir, g)
    paths = _model_files(folder)
    if g > 0:
        paths.append(folder / SAMPLES)
    else:
        paths += [run_dir / "data" / f"{split}.arrow" for split in SPLITS]
    files = {}
    for path in paths:
        entry = {"sha256": runs.file_sha256(path), "bytes": path.stat().st_size}
        if path.suffix == ".arrow":
            entry["rows"] = count_rows(path)
        files[_rel(run_dir, path)] = entry
    inputs = {_rel(run_dir, runs.generation_dir(run_dir, h) / SAMPLES):
              runs.file_sha256(runs.generation_dir(run_dir, h) / SAMPLES) for h in range(1, g)}
    return {"generation": g, "engine": "scratch", "files": files, "inputs": inputs}


def _problem(run_dir: Path, g: int, need_model: bool, hashes: dict) -> str | None:
    folder = runs.generation_dir(run_dir, g)
    try:
        metrics = runs.read_json(folder / runs.METRICS)
    except (CorruptRunError, OSError) as exc:
        return str(exc).split(";")[0]
    if not isinstance(metrics, dict) or metrics.get("generation") != g:
        return f"{folder / runs.METRICS} does not say it is generation {g} (copied from another folder?)"
    manifest = metrics.get(MANIFEST) or {}
    if manifest.get("generation") != g:
        return f"{folder / runs.METRICS} has no manifest of generation {g}"

    def sha(rel):
        if rel not in hashes:
            hashes[rel] = runs.file_sha256(run_dir / rel)
        return hashes[rel]

    for rel, entry in manifest.get("files", {}).items():
        if f"/{MODEL}/" in f"/{rel}" and not need_model:
            continue
        path = run_dir / rel
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry.get("bytes") or sha(rel) != entry.get("sha256"):
            return f"{path} is not the file generation {g} wrote (its content hash differs)"
    for rel, digest in manifest.get("inputs", {}).items():
        if not (run_dir / rel).is_file() or sha(rel) != digest:
            return f"generation {g} was trained on {run_dir / rel}, which was replaced or is missing"
    return None


def verify_generations(run_dir: str | Path, n_models: int, need_models: bool = True) -> int:
    """Check the complete generations below ``n_models`` (a prefix); return how many there are.

    Models are checked where the chain still needs them (``need_models``):
    generation 0's (siblings adopt it) and the newest complete generation's
    (the next one samples from it).  Raises :class:`CorruptRunError` naming
    the path and what to delete.
    """
    run_dir = Path(run_dir)
    hashes: dict = {}
    n_done = runs.complete_generations(run_dir, n_models)

    next_sampled = (runs.generation_dir(run_dir, n_done) / SAMPLES).is_file()
    for g in range(n_done):
        # the newest complete model is needed until the next generation's set is drawn from it
        needed = g == 0 or (g == n_done - 1 and not next_sampled)
        problem = _problem(run_dir, g, need_models and needed, hashes)
        if problem:
            raise CorruptRunError(f"{run_dir}: generation {g} is not usable: {problem}; "
                                  f"{runs.delete_advice(run_dir, g)}")
    if n_done < n_models:  # what a killed run left of the next generation
        trained = runs.generation_dir(run_dir, n_done) / MODEL / TRAINED
        if trained.is_file():
            try:
                runs.read_json(trained)
            except CorruptRunError:
                raise CorruptRunError(f"{trained} is damaged; delete {trained.parent} to train it again") from None
    return n_done


# -- running one ----------------------------------------------------------------------

def check_hub_for(settings: ScratchSettings, timeout: float = 1.5) -> str:
    """Fail in seconds when the dataset or tokenizer must come from a hub that cannot be used.

    ``"local"`` (nothing from the hub), ``"online"`` or ``"offline"``
    (offline mode and everything wanted looks cached), as
    :func:`mcutils.lm.hub.check_hub` for the fine-tuning chain.
    """
    wanted = []
    if settings.dataset != SYNTHETIC and not os.path.isdir(settings.dataset):
        wanted.append(("dataset", settings.dataset))
    if settings.tokenizer is not None and not os.path.isdir(settings.tokenizer):
        wanted.append(("model", settings.tokenizer))  # a tokenizer is cached as a model repository
    # a tokenizer is cached as a model repository
    return check_wanted(wanted, timeout, label=lambda kind: "tokenizer" if kind == "model" else kind)


def run_scratch_chain(settings: ScratchSettings | None = None, n_generations: int = 3, *,
                      runs_dir: str | Path | None = "", profile: str = "quick", device: str = "auto",
                      progress: bool = True, keep_models: bool = False, allow_cpu: bool = False,
                      log=None) -> ScratchResult:
    """Run (or resume, or just read) a from-scratch chain: generation 0, then ``n_generations`` more.

    ``n_generations`` counts the refits after generation 0 (Table 2's
    ``t = n_generations + 1``).  ``settings`` defaults to the ``profile``'s;
    ``runs_dir`` empty means ``runs/<profile>`` in the checkout.  All of a
    real dataset (``train_tokens=None``: the paper profile's TinyStories) is
    refused on the CPU unless ``allow_cpu``: that is GPU work.  A capped one
    (the paper-smoke profile's stand-in, a few thousand tokens) runs where it
    is.  Returns the chain read back.
    """
    settings = settings if settings is not None else for_profile(profile)
    if not isinstance(settings, ScratchSettings):
        raise validate.ParameterError(f"settings must be a ScratchSettings, got {type(settings).__name__}")
    n_models = check_n_generations(n_generations) + 1
    check_hub_for(settings)  # seconds, before any long import or work
    device = validate.resolve_device(device)
    check_precision(settings.precision, device)
    if not settings.is_synthetic and settings.train_tokens is None and device == "cpu" and not allow_cpu:
        raise validate.ParameterError(
            f"dataset={settings.dataset!r} with train_tokens=None (all of it, as in the paper profile) needs a GPU: "
            "no CUDA device is visible here. Run it on a GPU machine (device='cuda'), cap train_tokens for a small "
            "run on the CPU (chapter 07: scratch_train_tokens), or pass allow_cpu=True to try anyway")
    log = log or _default_log
    run_dir = chain_dir(settings, runs_dir, profile)
    if run_dir.parent.exists() and not run_dir.parent.is_dir():
        raise runs.RunsDirError(f"runs_dir {run_dir.parent} is a file, not a folder; pass a folder as runs_dir")
    _check_stored_settings(run_dir, settings)
    if all(runs.is_complete(run_dir, g) for g in range(n_models)):
        verify_generations(run_dir, n_models, need_models=False)  # reading only: no lock, no write
        return load_scratch_chain(run_dir, n_generations)
    with ExitStack() as stack:
        runs.check_writable_dir(run_dir.parent, "runs_dir")
        runs.check_writable_dir(run_dir, "the chain's folder")
        stack.enter_context(runs.writing(run_dir, "chain"))
        try:
            if not _check_stored_settings(run_dir, settings):
                runs.atomic_write_json(run_dir / SETTINGS_FILE, settings.to_dict())
            _adopt_generation0(run_dir, settings, log)
            verify_generations(run_dir, n_models, need_models=True)
            return _ScratchChain(settings, run_dir, device, progress, keep_models, log).run(n_models)
        except OSError as exc:
            error = runs.write_error(exc, run_dir.parent)
            if error is None:
                raise
            raise error from None


def _default_log(message: str) -> None:
    from tqdm.auto import tqdm
    tqdm.write(message)


def _check_stored_settings(run_dir: Path, settings: ScratchSettings) -> bool:
    """Whether the chain's settings file exists; it must hold ``settings``."""
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        stored = runs.read_json(path)
    except CorruptRunError:
        raise CorruptRunError(f"{path} is damaged; delete it and rerun with the same settings") from None
    if stored != json.loads(json.dumps(settings.to_dict())):
        raise CorruptRunError(f"{run_dir} holds a chain with other settings ({path} differs); move the folder "
                              "away or use another runs_dir")
    return True


def _adopt_generation0(run_dir: Path, settings: ScratchSettings, log) -> bool:
    """Copy a sibling chain's complete, verified generation 0 (and its data) when ours is missing.

    A sibling qualifies when its stored settings agree with ours on all but
    the policy and the temperature (:func:`generation0_view`).  The copy is
    verified in its new place; a damaged one is dropped with a note.
    """
    if runs.is_complete(run_dir, 0):
        return False
    wanted = runs.settings_hash(settings.generation0_settings())
    for other in sorted(run_dir.parent.glob(f"*/{SETTINGS_FILE}")):
        other_dir = other.parent
        if other_dir == run_dir or not runs.is_complete(other_dir, 0):
            continue
        try:
            if runs.settings_hash(generation0_view(runs.read_json(other))) != wanted:
                continue
            verify_generations(other_dir, 1, need_models=True)
        except CorruptRunError as exc:
            log(f"note: not reusing generation 0 of {other_dir.name}: {exc}")
            continue
        copied_data = False
        if not (run_dir / "data").exists():
            _copy_dir_atomically(other_dir / "data", run_dir / "data")
            copied_data = True
        target = runs.generation_dir(run_dir, 0)
        _copy_dir_atomically(runs.generation_dir(other_dir, 0), target)
        try:
            verify_generations(run_dir, 1, need_models=True)
        except CorruptRunError as exc:
            log(f"note: not reusing generation 0 of {other_dir.name}: {exc}")
            shutil.rmtree(target)
            if copied_data:
                shutil.rmtree(run_dir / "data")
            continue
        return True
    return False


def _load_model(folder: Path):
    from .model import load_model

    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise CorruptRunError(f"{folder} is missing or incomplete; delete it to train it again")
    try:
        return load_model(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptRunError(f"{folder} cannot be loaded ({type(exc).__name__}); delete it to train it again") \
            from None


class _ScratchChain:
    """The state of one chain run; one method per step of a generation (see :meth:`generation`)."""

    def __init__(self, settings: ScratchSettings, run_dir: Path, device: str, progress: bool, keep_models: bool,
                 log):
        self.settings, self.run_dir, self.device = settings, run_dir, device
        self.progress, self.keep_models, self.log = progress, keep_models, log
        self.tokenizer = load_tokenizer(settings)
        self.vocabulary = vocabulary_of(self.tokenizer)
        self.language = None
        if settings.is_synthetic:
            from .language import SyntheticLanguage
            self.language = SyntheticLanguage(settings.language)
        self.blocks = self._real_blocks()
        if len(self.blocks["train"]) < settings.batch_size:
            raise validate.ParameterError(f"the training split has {len(self.blocks['train'])} sequences, fewer "
                                          f"than one batch of batch_size={settings.batch_size}")
        from .metrics import TailReference
        self.tail = TailReference(self.blocks["train"][:, 1:], settings.rare_max_count)
        self.samples: dict[int, np.ndarray] = {}

    @property
    def n_real(self) -> int:
        return len(self.blocks["train"])

    def _real_blocks(self) -> dict[str, np.ndarray]:
        from .data import read_blocks, save_blocks

        folder = self.run_dir / "data"
        if not all((folder / f"{split}.arrow").is_file() for split in SPLITS):
            if self.language is not None:
                blocks = synthetic_blocks(self.settings, self.language, self.vocabulary.bos_token_id)
            else:
                blocks = hub_blocks(self.settings, self.tokenizer, self.vocabulary, self.progress)
            for split in SPLITS:
                save_blocks(folder / f"{split}.arrow", blocks[split])
        return {split: read_blocks(folder / f"{split}.arrow") for split in SPLITS}

    # -- data --------------------------------------------------------------------
    def _samples(self, g: int) -> np.ndarray:
        """The synthetic set of generation ``g`` (drawn by model ``g - 1``), read from disk once."""
        from .data import read_blocks
        if g not in self.samples:
            path = runs.generation_dir(self.run_dir, g) / SAMPLES
            blocks = read_blocks(path)
            expected = (self.settings.synthetic_blocks(g, self.n_real), self.settings.block_size)
            if blocks.shape != expected:
                raise CorruptRunError(f"{path} holds {blocks.shape} sequences, not the {expected} this chain "
                                      f"draws; {runs.delete_advice(self.run_dir, g)}")
            self.samples[g] = blocks
        return self.samples[g]

    def training_data(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """``(sequences, source)`` of generation ``g``: source -1 real, ``h`` drawn by model ``h``."""
        real = self.blocks["train"]
        if g == 0:
            return real, np.full(len(real), REAL_SOURCE)
        if self.settings.policy == generational.REPLACE_GROWN:
            newest = self._samples(g)
            return newest, np.full(len(newest), g - 1)
        # generated[h]: the set model h drew, stored in gen_{h+1}
        generated = [self._samples(h + 1) for h in range(g)]
        return mix_training_data(generational.make_policy(self.settings.policy), self.settings.seed, g, real,
                                 generated)

    # -- one generation ------------------------------------------------------------
    def run(self, n_models: int) -> ScratchResult:
        from tqdm.auto import tqdm

        bar = tqdm(range(n_models), desc=f"scratch {self.run_dir.name}", unit="gen", disable=not self.progress)
        for g in bar:
            if runs.is_complete(self.run_dir, g):
                continue
            metrics = self.generation(g)
            self.log(_one_line(metrics))
        bar.close()
        self._drop_old_models(n_models)
        return load_scratch_chain(self.run_dir, n_models - 1)

    def generation(self, g: int) -> dict:
        """Generation ``g``: draw its synthetic set, train a fresh model, score; each step reuses saved work."""
        timing: dict[str, float] = {}
        start = time.perf_counter()
        with _timed(timing, "sample_s"):
            new = self.draw(g) if g > 0 else None
        with _timed(timing, "train_s"):
            data, source = self.training_data(g)
            model, training = self.train(g, data)
        with _timed(timing, "evaluate_s"):
            metrics = self.score(g, model, data, source, new)
            metrics["training"] = training
        timing["total_s"] = time.perf_counter() - start
        self.save(g, metrics, timing)
        return metrics

    def draw(self, g: int) -> np.ndarray:
        """Generation ``g``'s new synthetic set, drawn by model ``g - 1`` (saved at once)."""
        from .data import save_blocks

        path = runs.generation_dir(self.run_dir, g) / SAMPLES
        if path.is_file():
            return self._samples(g)
        parent = _load_model(runs.generation_dir(self.run_dir, g - 1) / MODEL)
        s = self.settings
        blocks = ancestral_sample(parent, s.synthetic_blocks(g, self.n_real), s.block_size,
                                  bos_token_id=self.vocabulary.bos_token_id, temperature=s.temperature,
                                  seed_key=(s.seed, STREAM_SAMPLING, g), batch_size=s.generation_batch_size,
                                  device=self.device, progress=self.progress, description=f"sample gen {g}")
        save_blocks(path, blocks)
        self.samples[g] = blocks
        return blocks

    def train(self, g: int, data: np.ndarray):
        """A fresh model trained from scratch on ``data`` (loaded if a killed run saved it)."""
        from .model import save_model
        from .train import fine_tune

        folder = runs.generation_dir(self.run_dir, g)
        if (folder / MODEL / TRAINED).is_file():
            return _load_model(folder / MODEL), runs.read_json(folder / MODEL / TRAINED)
        s = self.settings
        model = fresh_model(s, self.vocabulary, g)
        result = fine_tune(model, data, self.blocks["validation"], epochs=s.epochs, learning_rate=s.learning_rate,
                           min_learning_rate=s.min_learning_rate, batch_size=s.batch_size,
                           weight_decay=s.weight_decay, seed=_seed_of(s.seed, STREAM_TRAINING, g),
                           device=self.device, precision=s.precision, eval_batch_size=s.eval_batch_size,
                           progress=self.progress, description=f"train gen {g} from scratch")
        training = result.to_dict()
        save_model(model, folder / MODEL)
        runs.atomic_write_json(folder / MODEL / TRAINED, training)
        # Continue from the saved weights, so a resumed run and this one use identical numbers.
        return _load_model(folder / MODEL), training

    def score(self, g: int, model, data: np.ndarray, source: np.ndarray, new: np.ndarray | None) -> dict:
        from .metrics import distinct_share, repeated_ngram_share, token_losses

        s, score = self.settings, dict(batch_size=self.settings.eval_batch_size, device=self.device)
        text_length = s.text_length
        n_real = int(np.sum(source == REAL_SOURCE))
        metrics = {
            "generation": g,
            "training_data": {
                "n_sequences": int(len(data)), "n_tokens": int(len(data) * text_length),
                "n_real_tokens": n_real * text_length, "n_synthetic_tokens": int(len(data) - n_real) * text_length,
                "sequences_by_source": {str(k): int(v) for k, v in zip(*np.unique(source, return_counts=True))}},
            "test_cross_entropy": float(token_losses(model, self.blocks["test"], **score).mean()),
            "validation_cross_entropy": float(token_losses(model, self.blocks["validation"], **score).mean()),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
        }
        if self.language is not None:
            metrics["source_test_cross_entropy"] = float(
                -source_token_log_probs(self.language, self.blocks["test"]).mean())
            metrics["source_entropy_rate"] = float(self.language.entropy_rate)
            metrics["training_data"]["true_cross_entropy"] = true_cross_entropy(self.language, data)["mean"]
        if g == 0:
            real = self.blocks["train"]
            metrics["real_data"] = {"n_sequences": int(len(real)), "n_tokens": int(len(real) * text_length),
                                    "repeated_4gram_share": repeated_ngram_share(real[:, 1:])}
            if self.language is not None:
                metrics["real_data"]["true_cross_entropy"] = true_cross_entropy(self.language, real)["mean"]
            metrics["synthetic"] = None
        else:
            synthetic = {"drawn_by": g - 1, "temperature": s.temperature, "n_sequences": int(len(new)),
                         "n_tokens": int(len(new) * text_length), "tail": self.tail.survival(new[:, 1:]),
                         "distinct_share": distinct_share(new), "repeated_4gram_share": repeated_ngram_share(new[:, 1:]),
                         "example": self.tokenizer.decode(new[0, 1:33].tolist())}
            if self.language is not None:
                synthetic["true_cross_entropy"] = true_cross_entropy(self.language, new)
            metrics["synthetic"] = synthetic
        return metrics

    def save(self, g: int, metrics: dict, timing: dict) -> None:
        """Write the generation; ``metrics.json`` last, with its manifest: then it is complete."""
        import torch

        folder = runs.generation_dir(self.run_dir, g)
        timing = {**timing, "device": self.device, "torch_threads": torch.get_num_threads()}
        runs.atomic_write_json(folder / TIMING, timing)
        stored = {**_jsonable(metrics), MANIFEST: build_manifest(self.run_dir, g)}
        runs.atomic_write_json(folder / runs.METRICS, stored)  # last: the generation is complete
        if g > 1 and not self.keep_models:  # model g - 1 has drawn its set; generation 0's is kept
            shutil.rmtree(runs.generation_dir(self.run_dir, g - 1) / MODEL, ignore_errors=True)

    def _drop_old_models(self, n_models: int) -> None:
        """Models a killed run left behind that no generation needs any more (all but 0 and the newest)."""
        if self.keep_models:
            return
        for g in range(1, n_models - 1):
            if runs.is_complete(self.run_dir, g + 1):
                shutil.rmtree(runs.generation_dir(self.run_dir, g) / MODEL, ignore_errors=True)


def _one_line(m: dict) -> str:
    data = m["training_data"]
    parts = [f"gen {m['generation']:02d}", f"train {data['n_tokens']} tokens ({data['n_real_tokens']} real)",
             f"test CE {m['test_cross_entropy']:.3f}"]
    if "source_test_cross_entropy" in m:
        parts.append(f"source {m['source_test_cross_entropy']:.3f}")
    synthetic = m.get("synthetic")
    if synthetic and synthetic.get("true_cross_entropy"):
        parts.append(f"synthetic set's true CE {synthetic['true_cross_entropy']['mean']:.3f}")
    if synthetic:
        from .metrics import tail_kept_text
        parts += tail_kept_text(synthetic["tail"], words="tokens")
    return " | ".join(parts)


# -- several chains ---------------------------------------------------------------------

def estimated_cost(settings: ScratchSettings, n_generations: int) -> float:
    """Sequences trained on over the chain, in units of the real set (what the wall time scales with)."""
    n = 1
    return float(sum(settings.training_blocks(g, n) * settings.epochs + settings.synthetic_blocks(g, n) / 4
                     for g in range(n_generations + 1)))


def run_scratch_chains(chains, *, jobs: int | None = None, runs_dir: str | Path | None = "",
                       profile: str = "quick", device: str = "auto", log=None) -> list[ScratchResult]:
    """:func:`run_scratch_chain` for several ``(settings, n_generations)`` pairs, ``jobs`` processes at once.

    Every chain is deterministic given its settings and the torch thread
    count, so chains run side by side in spawned processes (one per
    ``cpu_count // threads`` cores by default) give the numbers they give
    alone.  First, for every group of chains that share generation 0 and
    have none yet, the costliest one computes it (the others then adopt it);
    then every chain runs, the costliest first, so that no worker is left
    alone at the end.  On a GPU or with one job the chains run here in turn.
    """
    import torch

    chains = [(st, check_n_generations(n)) for st, n in chains]
    for st, _ in chains:
        if not isinstance(st, ScratchSettings):
            raise validate.ParameterError(f"chains must hold (ScratchSettings, n_generations) pairs, got {st!r}")
        check_hub_for(st)
    resolved = validate.resolve_device(device)
    threads = torch.get_num_threads()
    if jobs is None:
        jobs = max(1, (os.cpu_count() or 1) // max(threads, 1))
    validate.positive_int("jobs", jobs)
    kwargs = dict(runs_dir=runs_dir, profile=profile, device=device, progress=False, log=log)

    def done(st, n):
        return all(runs.is_complete(chain_dir(st, runs_dir, profile), g) for g in range(n + 1))

    pending = sorted((k for k, (st, n) in enumerate(chains) if not done(st, n)),
                     key=lambda k: -estimated_cost(*chains[k]))
    if jobs == 1 or len(pending) < 2 or resolved != "cpu":
        return [run_scratch_chain(st, n, **kwargs) for st, n in chains]
    groups: dict[str, list[int]] = {}
    for k in pending:
        groups.setdefault(runs.settings_hash(chains[k][0].generation0_settings()), []).append(k)

    def has_generation0(members):
        return any(runs.is_complete(chain_dir(chains[k][0], runs_dir, profile), 0) for k in members) or any(
            _sibling_has_generation0(chains[k][0], runs_dir, profile) for k in members[:1])

    first = [members[0] for members in groups.values() if not has_generation0(members)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or torch state
    with ProcessPoolExecutor(min(jobs, len(pending)), mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        for phase in ([(k, 0) for k in first], [(k, chains[k][1]) for k in pending]):
            futures = [pool.submit(_worker, chains[k][0].to_dict(), n, runs_dir, profile, device) for k, n in phase]
            for future in futures:
                future.result()  # a worker's error is raised here, with its message
    return [run_scratch_chain(st, n, **kwargs) for st, n in chains]  # all complete: read back


def _sibling_has_generation0(settings: ScratchSettings, runs_dir, profile: str) -> bool:
    wanted = runs.settings_hash(settings.generation0_settings())
    for other in runs.resolve_runs_dir(runs_dir, profile).glob(f"*/{SETTINGS_FILE}"):
        try:
            if runs.is_complete(other.parent, 0) and \
                    runs.settings_hash(generation0_view(runs.read_json(other))) == wanted:
                return True
        except CorruptRunError:
            continue
    return False


def _worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _worker(settings: dict, n_generations: int, runs_dir, profile: str, device: str) -> str:
    result = run_scratch_chain(ScratchSettings.from_dict(settings), n_generations, runs_dir=runs_dir,
                               profile=profile, device=device, progress=False, log=lambda message: None)
    return str(result.run_dir)


# -- what the chapter runs -------------------------------------------------------------

def chapter_chains(profile: str = "quick") -> list[tuple[ScratchSettings, int]]:
    """The chapter's from-scratch chains as ``(settings, n_generations)``, Table 2's layout.

    At temperature 1.0: every policy to ``t = 4`` (``n_generations = 3``) and
    replace to ``t = 10`` (9); at 0.3: replace and accumulate to ``t = 4`` in
    the quick profile, to ``t = 10`` for replace in the paper profile.  The
    paper profile adds the Llama models (replace and accumulate at 1.0, to
    ``t = 4``).  The first pair is what ``python -m mcutils.lm.scratch`` runs
    with no flags.  Generation 0 is shared by all chains of one model.
    """
    validate.choice("profile", profile, ["quick", "paper", "smoke"])
    base = for_profile(profile)
    out = [(base.replace(policy="replace"), 9)]
    out += [(base.replace(policy=p), 3) for p in ("accumulate", "accumulate-subsample", generational.REPLACE_GROWN)]
    cold = base.replace(temperature=0.3)
    out += [(cold.replace(policy="replace"), 9 if profile == "paper" else 3), (cold.replace(policy="accumulate"), 3)]
    if profile == "paper":
        from .scratch_settings import paper
        for name in ("llama-12m", "llama-42m", "llama-126m"):
            out += [(paper(name, policy=p), 3) for p in ("replace", "accumulate")]
    return out


# -- command line ----------------------------------------------------------------------

def _flag_fields():
    from dataclasses import fields

    from .settings import is_spec
    return [f for f in fields(ScratchSettings) if not is_spec(ScratchSettings, f)]


def _flags_dataclass() -> type:
    """ScratchSettings' flat fields as a dataclass for ``HfArgumentParser``: one flag each, None = not given."""
    import dataclasses
    import typing

    from .settings import describe, field_kind

    defaults = {name: make() for name, make in PROFILES.items()}
    specs = []
    for f in _flag_fields():
        kind, _ = field_kind(ScratchSettings, f)
        values = {name: getattr(s, f.name) for name, s in defaults.items()}
        default = (f"default: {values['quick']}" if len(set(map(repr, values.values()))) == 1 else
                   "default: " + ", ".join(f"{name} {value}" for name, value in values.items()))
        metadata = {"help": f"{describe(ScratchSettings, f)}; {default}".replace("%", "%%")}
        if "choices" in f.metadata:
            metadata["choices"] = list(f.metadata["choices"])
        specs.append((f.name, typing.Optional[kind], dataclasses.field(default=None, metadata=metadata)))
    return dataclasses.make_dataclass("ScratchFlags", specs, namespace={
        "_argument_group_name": "chain settings (the run name hashes them; given flags win over --settings)"})


def build_parser():
    import argparse

    from transformers import HfArgumentParser

    from .scratch_settings import PAPER_MODELS

    p = HfArgumentParser(_flags_dataclass(), prog="python -m mcutils.lm.scratch",
                         description="Run or resume a from-scratch chain (Gerstgrasser et al.); with no flags, the "
                                     "quick profile's first chapter chain (replace, T=1.0, to t=10).",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=["quick", "paper", "smoke"],
                   help="the defaults of every setting (default: quick)")
    p.add_argument("--paper-model", default="gpt2-9m", choices=list(PAPER_MODELS),
                   help="the paper profile's model (default gpt2-9m)")
    p.add_argument("--settings", default=None, metavar="JSON",
                   help="a JSON file of ScratchSettings fields over the profile (the only way to set language)")
    p.add_argument("--runs-dir", default="", help="runs folder (default: runs/<profile> in the checkout)")
    p.add_argument("--n-generations", type=int, default=None,
                   help="refits after generation 0 (default: the profile's first chapter chain's, 9)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on the CPU, as the book)")
    p.add_argument("--keep-models", action="store_true", help="keep every generation's model (disk!)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for action in p._actions:
        action.option_strings.sort(key=lambda option: "_" in option)
    return p


def settings_from_args(args) -> ScratchSettings:
    """The settings the command line asks for: profile, then ``--settings``, then the flags given."""
    from .settings import overrides_from_dict

    overrides = {}
    if args.settings is not None:
        try:
            with open(args.settings, encoding="utf-8") as handle:
                overrides = overrides_from_dict(ScratchSettings, json.loads(handle.read()))
        except (OSError, ValueError) as exc:
            raise validate.ParameterError(f"--settings {args.settings}: {exc}") from None
    overrides.update({f.name: getattr(args, f.name) for f in _flag_fields() if getattr(args, f.name) is not None})
    if args.profile == "paper":
        from .scratch_settings import paper
        return paper(args.paper_model, **overrides)
    return for_profile(args.profile, **overrides)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        n_generations = args.n_generations if args.n_generations is not None else chapter_chains(args.profile)[0][1]
        check_n_generations(n_generations)
        check_hub_for(settings)
        device = validate.resolve_device(args.device)
        if args.threads is not None:
            validate.integer("threads", args.threads, minimum=1, maximum=4096)
        elif device == "cpu":
            args.threads = 1
        if args.threads is not None:
            import torch
            torch.set_num_threads(args.threads)
        result = run_scratch_chain(settings, n_generations, runs_dir=args.runs_dir, profile=args.profile,
                                   device=device, progress=not args.no_progress, keep_models=args.keep_models)
    except validate.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, validate.ParameterError) else 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume (complete generations are kept)", file=sys.stderr)
        return 130
    print(f"{result.run_dir}: generation 0 and {result.n_generations} more; test cross-entropy (nats/token) "
          + " ".join(f"{x:.3f}" for x in result.series("test_cross_entropy")))
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- what the chapter reports ------------------------------------------------------------

def chapter_runs(results: list[ScratchResult]) -> dict[tuple[str, float], ScratchResult]:
    """The first model's chains of :func:`chapter_chains`, by ``(policy, temperature)``."""
    first = results[0].settings
    return {(r.settings.policy, r.settings.temperature): r for r in results
            if (r.settings.family, r.settings.hidden_size) == (first.family, first.hidden_size)}


def chapter_numbers(results: list[ScratchResult]) -> dict[str, tuple[float, str]]:
    """The chapter's key numbers, ``{name: (value, what)}``: Table 2's cells and generation 0's criteria.

    One function for chapter 07 and for measuring the numbers' tolerances, so that the two
    cannot drift apart.  ``t`` is the paper's model index: ``t = 1`` is generation 0.
    """
    from .scratch_fidelity import generation0_measures

    by_key = chapter_runs(results)
    replace = by_key[("replace", 1.0)]
    out = {"scratch_loss_t1": (replace.metrics[0]["test_cross_entropy"],
                               "from scratch: test cross-entropy of the model trained on real data (t=1, nats/token)")}
    for (policy, temperature), r in by_key.items():
        for t in (4, 10):
            if r.n_generations >= t - 1:
                out[f"scratch_loss_t{t}_{policy}_T{temperature:g}"] = (
                    r.metrics[t - 1]["test_cross_entropy"],
                    f"from scratch, {policy} at T={temperature:g}: test cross-entropy at t={t} (nats/token)")
    if replace.settings.is_synthetic:
        measures = generation0_measures(replace.metrics[0], replace.metrics[1]["synthetic"]["true_cross_entropy"])
        for name in ("excess_over_source", "samples_true_ratio", "samples_non_word_token_share"):
            out[f"scratch_gen0_{name}"] = (measures[name], f"from scratch, generation 0: {name.replace('_', ' ')}")
    return out
