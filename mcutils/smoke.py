"""Local stand-ins of the hub's model and data sets, so the paper profile's code runs on a CPU offline.

The paper profile loads OPT-125m, wikitext-2-raw-v1 and MNIST from the
Hugging Face hub (and 07's TinyStories set-up expects TinyStories in a
folder).  Nobody should rent a GPU to learn that a chapter breaks in its
third cell, so this module writes a folder of stand-ins with the *shapes*
of the real things, read through exactly the calls the paper profile makes
(``AutoModelForCausalLM.from_pretrained(folder)``,
``AutoTokenizer.from_pretrained(folder)``, ``datasets.load_dataset(folder)``):

``opt-125m/``
    A randomly initialised OPT with facebook/opt-125m's configuration
    (``transformers.OPTConfig()``'s defaults are that model's: 12 layers of
    width 768, 12 heads, feed-forward 3072, vocabulary 50272, 2048
    positions, ``pad=1, bos=eos=2``), 125M parameters, stored in float16 as
    the hub stores it; its tokenizer is a byte-level BPE (GPT-2's kind, as
    OPT's) trained here on the stand-in text, with OPT's special tokens at
    OPT's ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3) and OPT's
    habit of starting every text with ``</s>``.  Its ids stay far below the
    model's 50272 rows, as OPT's 50265 do.
``wikitext-2-raw-v1/``
    train / validation / test parquet files with one column ``text``, one
    line an entry as in wikitext: `` = Title = `` headings, `` = = Section
    = = `` subheadings, empty lines and paragraphs, generated from a seeded
    vocabulary; a few thousand tokens, not two million.
``mnist/``
    train / test parquet files with ``image`` (28×28 grey PIL images) and
    ``label`` (``ClassLabel`` 0-9), as ``ylecun/mnist``: scikit-learn's
    bundled 8×8 digits upsampled to 28×28.
``tinystories/``
    train / validation parquet files with ``text``: short generated stories.

Nothing here is a result: the numbers of a chapter run on the stand-ins
mean nothing.  What it shows is that every code path of the paper profile
runs, which is what ``profiles/paper-smoke.yaml`` and
``tests/test_paper_smoke.py`` check.  Everything is seeded and built once:
a folder holding a ``mcutils_smoke.json`` of the current :data:`FORMAT`
is kept.  Build them with ``python -m mcutils.smoke --out DIR`` (default:
``<checkout>/.mcutils_cache/paper-smoke``; ``make reproduce
PROFILE=paper-smoke`` does it first).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import runs

FORMAT = 1  # bump when what a stand-in holds changes, so old folders are rebuilt
STAMP = "mcutils_smoke.json"
SEED = 20240724  # the Nature paper's publication date: the stand-ins' one seed
MODEL, WIKITEXT, MNIST, TINYSTORIES = "opt-125m", "wikitext-2-raw-v1", "mnist", "tinystories"
STANDINS = (MODEL, WIKITEXT, MNIST, TINYSTORIES)
# OPT's special tokens, at OPT's ids (facebook/opt-125m's vocab.json starts with them).
OPT_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
TOKENIZER_VOCAB = 4000  # the stand-in BPE's size (OPT's: 50265); the model keeps OPT's 50272 rows
# Entries (lines) of each split of the wikitext stand-in, and articles per split.
WIKITEXT_ARTICLES = {"train": 6, "validation": 2, "test": 2}
TINYSTORIES_STORIES = {"train": 200, "validation": 40}
MNIST_TRAIN = 1500  # of scikit-learn's 1797 digits; the rest are the test split


def default_dir() -> Path:
    """``<checkout>/.mcutils_cache/paper-smoke`` (git-ignored), else ``~/.cache/mcutils/paper-smoke``."""
    root = runs.repo_root()
    return (root / ".mcutils_cache" if root is not None else Path.home() / ".cache" / "mcutils") / "paper-smoke"


# --------------------------------------------------------------------------- generated text

def _words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct made-up words of 1-4 syllables (a seeded, pronounceable vocabulary)."""
    onsets = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "st", "tr",
              "ch", "sh", "th", "gr", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "rt"]
    out: set[str] = set()
    while len(out) < n:
        syllables = rng.integers(1, 5)
        out.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)))
    return sorted(out)


def _zipf_weights(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


def _sentence(rng, words, weights, low=6, high=20) -> str:
    chosen = rng.choice(words, size=int(rng.integers(low, high)), p=weights)
    text = " ".join(chosen)
    if rng.random() < 0.3:  # wikitext's raw text keeps numbers and spaced punctuation (" @,@ ", " , ")
        text += f" , {rng.integers(1, 2000)}"
    return text[0].upper() + text[1:] + " ."


def wikitext_lines(split: str, seed: int = SEED) -> list[str]:
    """One split of the wikitext stand-in, entry by entry as in ``wikitext-2-raw-v1``.

    Wikitext's entries are: ``""`` between blocks, `` = Title = \\n`` for an
    article, `` = = Section = = \\n`` for its sections, and one paragraph a
    line, each with a leading space and a trailing newline.
    """
    index = list(WIKITEXT_ARTICLES).index(split)
    vocab_rng = np.random.default_rng([seed, 0])
    words = _words(vocab_rng, 600)
    weights = _zipf_weights(len(words))
    rng = np.random.default_rng([seed, 1, index])
    lines: list[str] = []
    for _ in range(WIKITEXT_ARTICLES[split]):
        title = " ".join(w.capitalize() for w in rng.choice(words[50:], size=int(rng.integers(1, 4))))
        lines += ["", f" = {title} = \n", ""]
        for section in range(int(rng.integers(2, 4))):
            if section:
                heading = " ".join(w.capitalize() for w in rng.choice(words[50:], size=int(rng.integers(1, 3))))
                lines += ["", f" = = {heading} = = \n", ""]
            for _ in range(int(rng.integers(1, 3))):
                paragraph = " ".join(_sentence(rng, words, weights) for _ in range(int(rng.integers(3, 7))))
                lines.append(f" {paragraph} \n")
    return lines


def tinystories_texts(split: str, seed: int = SEED) -> list[str]:
    """Short stories in TinyStories' manner (a child, a thing, a problem, a kind ending)."""
    index = list(TINYSTORIES_STORIES).index(split)
    rng = np.random.default_rng([seed, 2, index])
    names = ["Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Sue"]
    things = ["ball", "kite", "cat", "dog", "car", "doll", "box", "tree", "cake", "boat"]
    moods = ["happy", "sad", "scared", "excited", "tired", "curious"]
    places = ["park", "garden", "house", "beach", "forest", "school"]
    stories = []
    for _ in range(TINYSTORIES_STORIES[split]):
        name, friend = rng.choice(names, size=2, replace=False)
        thing, place = rng.choice(things), rng.choice(places)
        mood, later = rng.choice(moods, size=2)
        stories.append(
            f"Once upon a time, there was a little {rng.choice(['girl', 'boy'])} named {name}. {name} had a "
            f"{rng.choice(['big', 'red', 'small', 'shiny'])} {thing}. One day, {name} went to the {place} with "
            f"the {thing}. {name} felt {mood}. Then {friend} came and said, \"Can I play with your {thing}?\" "
            f"{name} said, \"Yes, let's play together!\" They played all day and {name} was {later}. The end.")
    return stories


# --------------------------------------------------------------------------- the builders

def _write_parquet(folder: Path, split: str, columns: dict, features=None) -> None:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    disable_progress_bar()  # one bar per tiny file says nothing
    try:
        Dataset.from_dict(columns, features=features).to_parquet(str(folder / f"{split}.parquet"))
    finally:
        if was_enabled:
            enable_progress_bar()


def build_wikitext(folder: Path, seed: int = SEED) -> None:
    for split in WIKITEXT_ARTICLES:
        _write_parquet(folder, split, {"text": wikitext_lines(split, seed)})


def build_tinystories(folder: Path, seed: int = SEED) -> None:
    for split in TINYSTORIES_STORIES:
        _write_parquet(folder, split, {"text": tinystories_texts(split, seed)})


def build_mnist(folder: Path, seed: int = SEED) -> None:
    """scikit-learn's 8×8 digits upsampled (bilinear) to 28×28 grey images, shuffled, as ``ylecun/mnist``."""
    from datasets import ClassLabel, Features, Image
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng([seed, 3]).permutation(len(digits.target))
    pixels = np.clip(np.round(digits.images[order] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = [PILImage.fromarray(p, mode="L").resize((28, 28), PILImage.BILINEAR) for p in pixels]
    labels = digits.target[order].astype(int).tolist()
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    for split, part in (("train", slice(0, MNIST_TRAIN)), ("test", slice(MNIST_TRAIN, None))):
        _write_parquet(folder, split, {"image": images[part], "label": labels[part]}, features)


def build_tokenizer(texts: list[str]):
    """A byte-level BPE trained on ``texts``, wrapped as a fast tokenizer with OPT's special tokens and ids.

    Like OPT's tokenizer it puts ``</s>`` before every text it encodes (the
    template ``</s> $A``), pads with ``<pad>`` and has no other additions.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=list(OPT_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    eos = OPT_SPECIAL_TOKENS.index("</s>")
    bpe.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B",
                                                       special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="</s>", eos_token="</s>", unk_token="</s>",
                                   pad_token="<pad>", model_max_length=2048)


def opt125m_config():
    """facebook/opt-125m's configuration: ``OPTConfig()``'s defaults are that model's (checked here)."""
    from transformers import OPTConfig

    config = OPTConfig()
    expected = dict(vocab_size=50272, hidden_size=768, word_embed_proj_dim=768, num_hidden_layers=12,
                    num_attention_heads=12, ffn_dim=3072, max_position_embeddings=2048, pad_token_id=1,
                    bos_token_id=2, eos_token_id=2, do_layer_norm_before=True, activation_function="relu")
    changed = {k: getattr(config, k) for k, v in expected.items() if getattr(config, k) != v}
    if changed:  # a future transformers with other defaults: say so rather than build another model
        raise RuntimeError(f"transformers.OPTConfig's defaults are no longer facebook/opt-125m's: {changed}")
    return config


def build_model(folder: Path, seed: int = SEED) -> None:
    """The OPT-125m-shaped model (random weights, seeded) and its tokenizer, in Hugging Face format."""
    import torch
    from transformers import OPTForCausalLM

    texts = [t for split in WIKITEXT_ARTICLES for t in wikitext_lines(split, seed)]
    texts += [t for split in TINYSTORIES_STORIES for t in tinystories_texts(split, seed)]
    tokenizer = build_tokenizer(texts)
    torch.manual_seed(seed)
    model = OPTForCausalLM(opt125m_config())
    model.to(torch.float16).save_pretrained(folder)  # the hub's opt-125m is stored in float16
    tokenizer.save_pretrained(folder)


BUILDERS = {MODEL: build_model, WIKITEXT: build_wikitext, MNIST: build_mnist, TINYSTORIES: build_tinystories}


def is_built(folder: Path) -> bool:
    stamp = Path(folder) / STAMP
    try:
        return json.loads(stamp.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def ensure_standins(out: str | os.PathLike | None = None, names=STANDINS, log=print) -> dict[str, Path]:
    """Every stand-in's folder under ``out``, each built first if absent or of an older :data:`FORMAT`.

    Each is built in a scratch folder and renamed into place, so an
    interrupted build leaves nothing that looks finished.
    """
    from .lm.model import _lock, quiet_transformers

    out = Path(out) if out is not None else default_dir()
    unknown = sorted(set(names) - set(STANDINS))
    if unknown:
        from .validate import ParameterError
        raise ParameterError(f"unknown stand-in(s) {unknown}; known: {list(STANDINS)}")
    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for name in names:
        target = out / name
        folders[name] = target
        if is_built(target):
            continue
        with _lock(out / f".{name}.lock"):
            if is_built(target):
                continue
            log(f"building the {name} stand-in in {target}")
            scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
            try:
                with quiet_transformers():
                    BUILDERS[name](scratch)
                runs.atomic_write_json(scratch / STAMP, {"format": FORMAT, "seed": SEED, "stand_in_for": name})
                if target.exists():
                    shutil.rmtree(target)
                os.replace(scratch, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return folders


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcutils.smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help=f"folder of the stand-ins (default: {default_dir()})")
    parser.add_argument("--only", nargs="+", choices=STANDINS, default=list(STANDINS), help="build only these")
    args = parser.parse_args(argv)
    for name, folder in ensure_standins(args.out, args.only).items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
