"""The pre-trained model every generation starts from: OPT-125m, or a tiny OPT built here.

Real path: ``AutoModelForCausalLM.from_pretrained("facebook/opt-125m")`` and
its tokenizer, exactly as a user online calls them (a local folder in Hugging
Face format goes through the same calls).  Offline stand-in (quick profile):
an ``OPTConfig`` of the same architecture, a few hundred thousand parameters,
whose vocabulary is the synthetic language's tokenizer (sizes equal, so no id
decodes to nothing), pre-trained on the *related* language of
:mod:`mcutils.lm.language` so that, like OPT-125m on wikitext-2, it knows the
words but still has to be fine-tuned on the target.

The profiles' pre-trained tiny models ship with mcutils (``pretrained/``,
written by ``tools/ship_tiny_models.py``), as OPT-125m's weights come from the
hub: every machine starts its chains from the same weights, and a chapter does
not spend its first minute pre-training.  Any other tiny model, or any tiny
model when ``MCUTILS_BUILD_TINY=1``, is pre-trained here on first use and
cached in safetensors under ``$MCUTILS_CACHE_DIR``, else
``<checkout>/.mcutils_cache`` (git-ignored), else ``~/.cache/mcutils``, in a
folder named by the hash of its settings and of the machine's arithmetic.
"""
from __future__ import annotations

import copy
import fcntl
import functools
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .. import runs, validate
from . import dist
from .hub import HubUnavailable, hub_offline, offline_advice
from .settings import TINY, ChainSettings

CACHE_FORMAT = 4  # bump when the way the tiny model is built changes (4: seeds from SeedSequence streams)
# The tiny model's pre-training text: samples of the related language (``seed`` of ``sample_text``,
# which draws from ``default_rng([language seed, sample, STREAM_PRETRAINING_TEXT])``).
PRETRAINING_SAMPLE = 101         # the pre-training blocks
HELD_OUT_SAMPLE = 102            # the held-out blocks that choose the best epoch
# Its torch seeds: ``SeedSequence([language seed, STREAM])`` (see :func:`tiny_seed`).
STREAM_TINY_WEIGHTS = 0x71A1     # the initial weights
STREAM_TINY_TRAINING = 0x71A2    # the Trainer's seed (data order, dropout)
PRETRAINING_INFO = "mcutils_pretraining.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained"  # the profiles' tiny models, pre-trained once
BUILD_ENV = "MCUTILS_BUILD_TINY"  # "1": pre-train every tiny model here, shipped or not
WEIGHTS = "model.safetensors"
SHIPPED_PROFILES = ("quick", "small")  # the profiles whose tiny model ships (06's stand-in, 07's small model)


def tiny_seed(language_seed: int, stream: int) -> int:
    """An int seed below 2**32 for one purpose of the tiny model's pre-training."""
    import numpy as np
    return int(np.random.SeedSequence([language_seed, stream]).generate_state(1)[0])


def cache_dir() -> Path:
    env = os.environ.get("MCUTILS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    root = runs.repo_root()
    return root / ".mcutils_cache" if root is not None else Path.home() / ".cache" / "mcutils"


def pretraining_threads() -> int:
    """Torch threads for pre-training the stand-in on the CPU: the cores this process may use, at most 4.

    Nothing else of a chapter can start before the pre-trained model exists, so it uses
    every core even where the chains run one thread a process: on this project's 2-core
    machine a pre-training step of the quick stand-in took 0.18 s at 2 threads against
    0.28 s at 1 (median of 8 alternating runs of 5 steps, batch 64 of 64 tokens).  Capped
    at 4 so that a many-core machine does not spend a model this small on synchronisation
    (not measured beyond 2).  ``MCUTILS_PRETRAIN_THREADS`` overrides it.
    """
    env = os.environ.get("MCUTILS_PRETRAIN_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise validate.ParameterError(f"MCUTILS_PRETRAIN_THREADS must be a positive integer, got {env!r}")
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def arithmetic_key(device: str = "cpu", threads: int | None = None) -> dict:
    """What decides torch's rounding, and so a trained model's last bits, besides the code and the seed.

    Torch's CPU kernels are chosen per instruction set (``ATEN_CPU_CAPABILITY``,
    MKL's and oneDNN's own dispatch) and reduce in another order for another
    thread count; training amplifies the difference, so the same settings
    pre-train a measurably different tiny model on another machine.  The
    cache keeps one model per combination instead of handing one machine's
    model to another.
    """
    import torch

    key = {"torch": torch.__version__, "device": device}
    if device == "cpu":
        key.update(cpu_capability=torch.backends.cpu.get_cpu_capability(),
                   threads=threads if threads is not None else torch.get_num_threads(),
                   mkl=os.environ.get("MKL_ENABLE_INSTRUCTIONS", ""), onednn=os.environ.get("ONEDNN_MAX_CPU_ISA", ""))
    return key


def recipe_key(settings: ChainSettings) -> dict:
    """Everything the pre-trained tiny model's recipe depends on: the code's format and the settings."""
    return {"format": CACHE_FORMAT, "language": settings.language.to_dict(),
            "tiny": settings.to_dict()["tiny"], "block_size": settings.block_size}


def tiny_key(settings: ChainSettings, device: str = "cpu") -> dict:
    """Everything a tiny model pre-trained here depends on, the machine's arithmetic included."""
    return {**recipe_key(settings),
            "arithmetic": arithmetic_key(device, pretraining_threads() if device == "cpu" else None)}


def tiny_dir(settings: ChainSettings, device: str = "cpu") -> Path:
    """Where a tiny model pre-trained on this machine is cached (whether or not one ships)."""
    return cache_dir() / "lm" / runs.run_name("tiny-opt", tiny_key(settings, device))


def build_here() -> bool:
    """``MCUTILS_BUILD_TINY=1``: pre-train every tiny model on this machine, even one that ships."""
    value = os.environ.get(BUILD_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise validate.ParameterError(f"{BUILD_ENV} must be 1 (pre-train the tiny model here) or 0 / unset "
                                      f"(use the one shipped with mcutils where there is one), got {value!r}")
    return value == "1"


def shipped_dir(settings: ChainSettings) -> Path | None:
    """The tiny model shipped with mcutils for these settings; None where none ships or ``MCUTILS_BUILD_TINY=1``."""
    if build_here():
        return None
    folder = SHIPPED_DIR / runs.run_name("tiny-opt", recipe_key(settings))
    if not (folder / PRETRAINING_INFO).is_file():
        return None
    _check_shipped(folder)
    return folder


@functools.lru_cache(maxsize=None)
def _check_shipped(folder: Path) -> None:
    """Refuse shipped weights that are not the ones recorded beside them (once a process)."""
    recorded = json.loads((folder / PRETRAINING_INFO).read_text()).get("weights_sha256")
    path = folder / WEIGHTS
    if not path.is_file() or runs.file_sha256(path) != recorded:
        raise validate.UserError(
            f"the tiny model shipped in {folder} is damaged ({WEIGHTS} is missing or not the file recorded in "
            f"{PRETRAINING_INFO}); reinstall mcutils, or set {BUILD_ENV}=1 to pre-train it on this machine")


def tiny_source(settings: ChainSettings, device: str = "cpu") -> Path:
    """The folder the tiny model is loaded from: the shipped one, else this machine's cache (maybe not built yet)."""
    return shipped_dir(settings) or tiny_dir(settings, device)


def tiny_config(vocab_size: int, settings: ChainSettings):
    """OPT's architecture at toy size; positions for a prompt block plus its continuation."""
    from transformers import OPTConfig

    spec = settings.tiny
    return OPTConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden_size, word_embed_proj_dim=spec.hidden_size,
        num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads, ffn_dim=spec.ffn_dim,
        max_position_embeddings=2 * settings.block_size, dropout=spec.dropout, attention_dropout=0.0,
        activation_function="relu", do_layer_norm_before=True,
        pad_token_id=1, bos_token_id=2, eos_token_id=2)  # OPT's own special ids


@contextmanager
def quiet_transformers():
    """No "Loading weights" / "Writing model shards" bars for the small saves and loads of a chain."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def _lock(path: Path):
    """One builder at a time (two notebooks may start at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_tiny(settings: ChainSettings, device: str = "cpu", progress: bool = True, log=print) -> Path:
    """The pre-trained tiny model's folder: the shipped one, else the cached one, pre-trained first if absent
    (the quick profile's: about a minute and a half on 2 cores)."""
    shipped = shipped_dir(settings)
    if shipped is not None:
        return shipped
    target = tiny_dir(settings, device)
    if dist.agree((target / PRETRAINING_INFO).is_file()):
        return target
    if dist.rank_and_world()[1] > 1:  # every process trains (DDP); the first one writes
        _build_tiny(settings, target, device, progress, log)
        dist.barrier()
        return target
    with _lock(target.parent / f".{target.name}.lock"):
        if not (target / PRETRAINING_INFO).is_file():
            _build_tiny(settings, target, device, progress, log)
    return target


def _build_tiny(settings: ChainSettings, target: Path, device: str, progress: bool, log) -> None:
    import numpy as np
    import torch
    from transformers import OPTForCausalLM

    from .data import document_length, tokenize_and_cut
    from .language import SyntheticLanguage

    spec = settings.tiny
    if dist.is_main():
        log(f"pre-training the tiny OPT on the related language ({spec.pretrain_tokens:,} tokens, "
            f"{spec.pretrain_epochs} epochs); cached in {target}")
    language = SyntheticLanguage(settings.language)
    tokenizer = language.tokenizer()
    text = dict(document_length=document_length(settings), pretraining=True)
    blocks = tokenize_and_cut(language.sample_text(spec.pretrain_tokens, seed=PRETRAINING_SAMPLE, **text),
                              tokenizer, settings.block_size)
    held_out = tokenize_and_cut(language.sample_text(64 * settings.block_size, seed=HELD_OUT_SAMPLE, **text),
                                tokenizer, settings.block_size)
    torch.manual_seed(tiny_seed(settings.language.seed, STREAM_TINY_WEIGHTS))
    model = OPTForCausalLM(tiny_config(len(tokenizer), settings))
    with _torch_threads(pretraining_threads() if device == "cpu" else None):
        result = _pretrain(model, blocks, held_out, spec, settings, device, progress)
    if dist.is_main():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        with quiet_transformers():
            model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        info = {"key": tiny_key(settings, device), "n_parameters": int(sum(p.numel() for p in model.parameters())),
                "pretraining": result.to_dict(), "n_blocks": int(len(blocks)),
                "held_out_perplexity": float(np.exp(result.best_validation_loss)),
                }
        runs.atomic_write_json(scratch / PRETRAINING_INFO, info)
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch, target)


def _pretrain(model, blocks, held_out, spec, settings, device, progress):
    from .train import fine_tune

    return fine_tune(model, blocks, held_out, epochs=spec.pretrain_epochs,
                     learning_rate=spec.pretrain_learning_rate,
                     min_learning_rate=spec.pretrain_learning_rate / 100,
                     batch_size=spec.pretrain_batch_size, device=device,
                     seed=tiny_seed(settings.language.seed, STREAM_TINY_TRAINING),
                     progress=progress, description="pre-train tiny OPT")


@contextmanager
def _torch_threads(n: int | None):
    """Torch's intra-op thread count set to ``n`` (``None``: left alone) for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_tokenizer(settings: ChainSettings, device: str = "cpu", progress: bool = True, log=print):
    """The tokenizer of ``settings.model`` (the tiny model's is the synthetic language's)."""
    from transformers import AutoTokenizer

    source = str(ensure_tiny(settings, device, progress, log)) if settings.model == TINY else settings.model
    return _from_pretrained(AutoTokenizer, source)


def load_base_model(settings: ChainSettings, device: str = "cpu", progress: bool = True, log=print):
    """``(model, tokenizer)``: the pre-trained model every generation starts from, in fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    source = str(ensure_tiny(settings, device, progress, log)) if settings.model == TINY else settings.model
    tokenizer = load_tokenizer(settings, device, progress, log)
    model = _from_pretrained(AutoModelForCausalLM, source, dtype=torch.float32)
    if settings.model == TINY and model.config.vocab_size != len(tokenizer):
        raise RuntimeError(f"cached tiny model in {source} has vocab_size {model.config.vocab_size} "
                           f"but its tokenizer {len(tokenizer)}; delete the folder to rebuild it")
    return model.eval(), tokenizer


def _from_pretrained(cls, source: str, **kwargs):
    try:
        with quiet_transformers():
            return cls.from_pretrained(source, **kwargs)
    except OSError as exc:
        if hub_offline() and not os.path.isdir(source):
            raise HubUnavailable(offline_advice(f"model {source!r}")) from exc
        raise validate.ParameterError(f"could not load model {source!r}: {exc}") from exc


def fresh_copy(model):
    """A copy of the pre-trained model to fine-tune (every generation starts from it)."""
    return copy.deepcopy(model)


def save_model(model, folder: Path) -> None:
    """Weights as safetensors with their config, written to a scratch folder then renamed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    with quiet_transformers():
        model.save_pretrained(scratch)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(scratch, folder)


def load_model(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def info(settings: ChainSettings, device: str = "cpu") -> dict:
    """The tiny model's pre-training record, shipped or cached (empty for a real model or one not built yet)."""
    if settings.model != TINY:
        return {}
    path = tiny_source(settings, device) / PRETRAINING_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def origin(settings: ChainSettings, device: str = "cpu") -> str:
    """Where a chain's pre-trained model comes from, in words: the hub, mcutils' shipped weights, or this machine."""
    if settings.model != TINY:
        where = "a local folder" if os.path.isdir(settings.model) else "the Hugging Face hub"
        return f"pre-trained model {settings.model!r} from {where}"
    shipped = shipped_dir(settings)
    if shipped is None:
        record = info(settings, device)
        how = f"{BUILD_ENV}=1" if build_here() else "no pre-trained weights ship for these settings"
        held_out = (f"; held-out perplexity {record['held_out_perplexity']:.1f}" if record else "")
        return f"pre-trained on this machine ({how}), cached in {tiny_dir(settings, device)}{held_out}"
    record = json.loads((shipped / PRETRAINING_INFO).read_text())
    return (f"pre-trained by mcutils on the related language ({record['pretraining']['steps']} steps, "
            f"{record['build_seconds']:.0f} s on {record['built_on']}; held-out perplexity "
            f"{record['held_out_perplexity']:.1f}) and shipped with it, as OPT-125m's weights come from the hub "
            f"({BUILD_ENV}=1 pre-trains it here)")
