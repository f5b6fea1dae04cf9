"""What a from-scratch chain is (Gerstgrasser et al.): its settings, its profiles, checks that fail fast.

Gerstgrasser et al. (arXiv 2404.01413, §2 and Table 2) *pretrain a fresh
model from scratch at every iteration*, for one epoch over its training set,
and draw each synthetic set by ancestral sampling at temperature 1.0 (0.3 in
an ablation), as many tokens as the real training data: GPT-2 (9M
parameters) and Llama-2 (12M, 42M, 126M) on TinyStories.  This module holds
the settings of such a chain (:class:`ScratchSettings`) and its profiles;
:mod:`mcutils.lm.scratch` runs it.  Nothing here imports torch or
transformers, so a bad setting or an unreachable hub is refused in seconds.

Sequences.  A training sequence is ``block_size`` tokens: the tokenizer's BOS
token, then ``block_size - 1`` tokens of text (the real text is one stream cut
into pieces of that length).  A synthetic sequence is drawn the same way:
BOS, then ``block_size - 1`` tokens sampled one after the other.  Starting
from BOS (rather than continuing real prompts, as Shumailov's chain does)
makes every synthetic sequence a draw from the model's own distribution with
no real text in it, as in the paper, where each synthetic set replaces the
corpus; and a model that always sees BOS first learns where text starts.
"Tokens" counts text tokens, BOS excluded: the real training set holds
``n_blocks × (block_size - 1)`` of them, and so does every synthetic set.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .. import generational, runs, validate
from .language import LanguageSpec
from .settings import PRECISIONS, SYNTHETIC, _source_name, check_fields

GPT2 = "gpt2"
LLAMA = "llama"
FAMILIES = (GPT2, LLAMA)
TINYSTORIES = "roneneldan/TinyStories"        # train / validation splits, column "text"
GPT2_TOKENIZER = "openai-community/gpt2"      # GPT-2's byte-level BPE, 50257 tokens
# The Llama-2 tokenizer (32000-token SentencePiece BPE).  Meta's own repositories are gated (a token
# and an accepted licence); this ungated copy holds the same tokenizer files.
LLAMA_TOKENIZER = "hf-internal-testing/llama-tokenizer"
POLICIES = (*generational.POLICIES, generational.REPLACE_GROWN)
# Part of every run name: bump when the same settings would give other numbers.
SCRATCH_ENGINE_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class ScratchSettings:
    """Every setting that changes a from-scratch chain's numbers (the run name hashes them all).

    ``n_generations``, the device and the runs folder are not settings: a
    chain run to generation 3 continues to 9 under the same name.  Each
    field's help text and bounds are in its metadata (checked by
    :func:`mcutils.lm.settings.check_fields`; the command line makes its
    flags from them).
    """

    family: str = field(default=GPT2, metadata={
        "help": "model family: GPT-2 (GPT2LMHeadModel) or Llama (LlamaForCausalLM)", "choices": FAMILIES})
    dataset: str = field(default=SYNTHETIC, metadata={
        "help": "'synthetic' (the synthetic language) or a hub id / local folder with train and validation "
                "splits (the paper: roneneldan/TinyStories)", "sources": (SYNTHETIC,)})
    tokenizer: str | None = field(default=None, metadata={
        "help": "hub id or folder of the tokenizer (None: the synthetic language's own)",
        "what": "a tokenizer hub id or folder"})
    seed: int = field(default=0, metadata={
        "help": "the chain's seed (generation g draws from SeedSequence([seed, stream, g]))",
        "minimum": 0, "maximum": validate.MAX_SEED})
    policy: str = field(default="replace", metadata={
        "help": "data policy: replace, accumulate, accumulate-subsample, or replace-grown (replace with the "
                "synthetic set grown to accumulate's size)", "choices": POLICIES})
    temperature: float = field(default=1.0, metadata={
        "help": "sampling temperature of the synthetic sets (paper: 1.0; ablation 0.3)",
        "minimum": 0.0, "maximum": 100.0, "strict_minimum": True})
    # Training from scratch (Trainer): AdamW, cosine annealing to min_learning_rate.
    epochs: int = field(default=1, metadata={
        "help": "epochs of training from scratch per generation (paper: 1)", "minimum": 1, "maximum": 1000})
    learning_rate: float = field(default=1e-3, metadata={
        "help": "AdamW's learning rate at the start of cosine annealing", "minimum": 0.0, "strict_minimum": True})
    min_learning_rate: float = field(default=1e-5, metadata={
        "help": "the learning rate cosine annealing ends at", "minimum": 0.0, "maximum": "learning_rate"})
    batch_size: int = field(default=16, metadata={"help": "global batch size (sequences)", "minimum": 1})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW's weight decay", "minimum": 0.0})
    precision: str = field(default="fp32", metadata={
        "help": "training's arithmetic: fp32, or bf16 / fp16 mixed precision (fp16: CUDA only)",
        "choices": PRECISIONS})
    # The model, built from its config with seeded initial weights.
    block_size: int = field(default=64, metadata={
        "help": "tokens a sequence, BOS included (the model's context length)", "minimum": 2, "maximum": 8192})
    hidden_size: int = field(default=96, metadata={
        "help": "model width (a multiple of n_heads)", "minimum": 8, "maximum": 8192})
    n_layers: int = field(default=2, metadata={"help": "transformer layers", "minimum": 1, "maximum": 96})
    n_heads: int = field(default=4, metadata={"help": "attention heads", "minimum": 1, "maximum": 128})
    intermediate_size: int = field(default=384, metadata={
        "help": "width of the feed-forward layers (GPT-2's n_inner)", "minimum": 8, "maximum": 65536})
    dropout: float = field(default=0.0, metadata={"help": "dropout", "minimum": 0.0, "maximum": 0.9})
    # The data: real splits (synthetic: their sizes; a hub dataset: caps) and generation.
    train_tokens: int | None = field(default=32_768, metadata={
        "help": "text tokens of the real training set (synthetic: drawn; a hub dataset: the first ones, "
                "None: all)", "minimum": 1})
    eval_tokens: int = field(default=8_192, metadata={
        "help": "text tokens of the validation and of the test split each", "minimum": 1})
    generation_batch_size: int = field(default=256, metadata={
        "help": "sequences sampled at once (each batch has its own seed)", "minimum": 1})
    eval_batch_size: int = field(default=128, metadata={"help": "sequences scored at once", "minimum": 1})
    rare_max_count: int = field(default=8, metadata={
        "help": "tokens and token pairs seen at most this often in the real training set form the rare tail",
        "minimum": 1})
    language: LanguageSpec = field(default_factory=LanguageSpec, metadata={
        "help": "the synthetic language (dataset='synthetic' only)"})

    def __post_init__(self):
        check_fields(self)
        validate.seed("language.seed", self.language.seed)
        if self.hidden_size % self.n_heads:
            raise validate.ParameterError(
                f"hidden_size={self.hidden_size} must be a multiple of n_heads={self.n_heads}")
        if self.dataset == SYNTHETIC:
            if self.tokenizer is not None:
                raise validate.ParameterError(
                    f"tokenizer={self.tokenizer!r}: the synthetic language has its own word-level tokenizer; "
                    "leave tokenizer=None with dataset='synthetic'")
            if self.train_tokens is None:
                raise validate.ParameterError("train_tokens=None means 'all' of a hub dataset; the synthetic "
                                              "language needs a number of tokens")
            for name in ("train_tokens", "eval_tokens"):
                n_blocks = getattr(self, name) // self.text_length
                if n_blocks < 1:
                    raise validate.ParameterError(
                        f"{name}={getattr(self, name)} is less than one sequence of block_size - 1 = "
                        f"{self.text_length} text tokens")
            if self.n_real_blocks < self.batch_size:
                raise validate.ParameterError(
                    f"the synthetic training set has {self.n_real_blocks} sequences of {self.block_size} tokens, "
                    f"fewer than one batch of batch_size={self.batch_size}")
        elif self.tokenizer is None:
            raise validate.ParameterError(
                f"dataset={self.dataset!r} needs a tokenizer (a hub id or folder, e.g. {GPT2_TOKENIZER!r})")
        else:
            _source_name("tokenizer", self.tokenizer)
            # A cap on a real dataset bounds its sequences before anything is loaded: fail now, not after a download.
            if self.train_tokens is not None and self.train_tokens // self.text_length < self.batch_size:
                raise validate.ParameterError(
                    f"train_tokens={self.train_tokens} makes at most {self.train_tokens // self.text_length} "
                    f"sequences of block_size - 1 = {self.text_length} text tokens, fewer than one batch of "
                    f"batch_size={self.batch_size}; lower batch_size or raise train_tokens")

    # -- derived ----------------------------------------------------------------
    @property
    def text_length(self) -> int:
        """Text tokens a sequence: ``block_size`` minus the BOS token."""
        return self.block_size - 1

    @property
    def n_real_blocks(self) -> int | None:
        """Real training sequences of the synthetic corpus (None for a hub dataset: known once loaded)."""
        return self.train_tokens // self.text_length if self.dataset == SYNTHETIC else None

    @property
    def is_synthetic(self) -> bool:
        return self.dataset == SYNTHETIC

    def synthetic_blocks(self, generation: int, n_real: int) -> int:
        """Sequences of the synthetic set generation ``generation`` trains on (drawn by model g - 1).

        ``n_real`` for every policy but ``replace-grown``, whose generation
        ``g`` trains on ``(g + 1)·n_real`` sequences, accumulate's size, all
        drawn by model ``g - 1``.  Generation 0 draws none.
        """
        if generation == 0:
            return 0
        return (generation + 1) * n_real if self.policy == generational.REPLACE_GROWN else n_real

    def training_blocks(self, generation: int, n_real: int) -> int:
        """Sequences generation ``generation`` trains on under the policy."""
        if generation == 0:
            return n_real
        if self.policy in (generational.REPLACE_GROWN, "accumulate"):
            return (generation + 1) * n_real
        return n_real

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ScratchSettings":
        from .settings import overrides_from_dict
        return cls(**overrides_from_dict(cls, data))

    def replace(self, **changes) -> "ScratchSettings":
        return replace(self, **changes)

    def result_settings(self) -> dict:
        """The settings the numbers depend on, with the engine version (the language only when used)."""
        out = self.to_dict()
        if not self.is_synthetic:
            out.pop("language")
        out["engine"] = SCRATCH_ENGINE_VERSION
        out["procedure"] = "scratch"
        return out

    def generation0_settings(self) -> dict:
        """What generation 0 depends on: everything but the policy and the temperature (shared by chains)."""
        return generation0_view(self.to_dict())

    @property
    def run_name(self) -> str:
        """``scratch-<family>-<dataset>-<policy>-T<temperature>-e<epochs>-s<seed>-<hash>``."""
        data = _SAFE.sub("_", Path(self.dataset).name if os.path.isdir(self.dataset) else self.dataset.split("/")[-1])
        words = ["scratch", self.family, data, self.policy, f"T{self.temperature:g}", f"e{self.epochs}",
                 f"s{self.seed}"]
        return runs.run_name("-".join(words), self.result_settings())


def generation0_view(settings: dict) -> dict:
    """:meth:`ScratchSettings.generation0_settings` of a stored settings dict."""
    out = dict(settings)
    if out.get("dataset") != SYNTHETIC:
        out.pop("language", None)
    for name in ("policy", "temperature", "generation_batch_size"):  # generation 0 samples nothing
        out.pop(name, None)
    out["engine"] = SCRATCH_ENGINE_VERSION
    return out


# -- profiles ------------------------------------------------------------------------

# The quick profile's synthetic language: see quick() and benchmarks/scratch_standin.md.
QUICK_LANGUAGE = dict(n_words=32, n_topics=2, topic_words=8)


def quick(**overrides) -> ScratchSettings:
    """The quick profile: a small GPT-2 trained from scratch on the synthetic language, two CPU cores.

    Chosen on generation 0 alone against the criteria of
    :mod:`mcutils.lm.scratch_fidelity` (``benchmarks/scratch_standin.md``, try
    ``s13``): a 2-layer GPT-2 of width 96 (233k parameters) trained for one
    epoch on 512 sequences of 63 words (32,256 tokens) of a 32-word language
    with 2 topics, batch 4, AdamW at 2e-3 annealed to 1e-4.  Its test
    cross-entropy is 6% above the source's exact one (the criterion: 2% to
    15%); its temperature-1.0 samples have a true cross-entropy 1.23 times the
    real data's (at most 1.25) and 0.45% of their tokens are no word (at most
    0.5%).  Larger languages needed two to three times the tokens to meet the
    criteria, which the chapter's budget (43 real-sized epochs and 30
    real-sized synthetic sets, about four minutes on two cores) does not allow.
    """
    base = dict(family=GPT2, hidden_size=96, n_layers=2, n_heads=4, intermediate_size=384, block_size=64,
                train_tokens=32_256, eval_tokens=8_064, batch_size=4, learning_rate=2e-3,
                min_learning_rate=1e-4, generation_batch_size=512, language=LanguageSpec(**QUICK_LANGUAGE))
    base.update(overrides)
    return ScratchSettings(**base)


# The paper's models (Gerstgrasser et al., Table 2): shapes chosen here, parameter counts computed by
# mcutils.lm.scratch.n_parameters (tests/test_lm_scratch.py checks them against the names).
PAPER_MODELS = {
    "gpt2-9m": dict(family=GPT2, tokenizer=GPT2_TOKENIZER, hidden_size=144, n_layers=8, n_heads=4,
                    intermediate_size=576),
    "llama-12m": dict(family=LLAMA, tokenizer=LLAMA_TOKENIZER, hidden_size=256, n_layers=6, n_heads=8,
                      intermediate_size=688),
    "llama-42m": dict(family=LLAMA, tokenizer=LLAMA_TOKENIZER, hidden_size=512, n_layers=8, n_heads=8,
                      intermediate_size=1376),
    "llama-126m": dict(family=LLAMA, tokenizer=LLAMA_TOKENIZER, hidden_size=768, n_layers=14, n_heads=12,
                       intermediate_size=2048),
}
PAPER_NOMINAL_PARAMETERS = {"gpt2-9m": 9e6, "llama-12m": 12e6, "llama-42m": 42e6, "llama-126m": 126e6}


def paper(model: str = "gpt2-9m", **overrides) -> ScratchSettings:
    """The paper's setting: one of :data:`PAPER_MODELS` trained from scratch for one epoch on TinyStories.

    Context 512 tokens, batch 128, AdamW at 5e-4 with cosine annealing (our
    choices; the paper gives the models, one epoch, the temperatures and the
    corpus).  Needs the hub (the data and the tokenizer) and a GPU.
    """
    validate.choice("model", model, list(PAPER_MODELS))
    base = dict(dataset=TINYSTORIES, block_size=512, batch_size=128, learning_rate=5e-4, min_learning_rate=5e-5,
                train_tokens=None, eval_tokens=1_048_576, generation_batch_size=512, eval_batch_size=256,
                precision="fp32", **PAPER_MODELS[model])
    base.update(overrides)
    return ScratchSettings(**base)


def smoke(**overrides) -> ScratchSettings:
    """Toy sizes for tests: a chain of a few generations in seconds (not a result)."""
    base = dict(hidden_size=16, n_layers=1, n_heads=2, intermediate_size=32, block_size=9,
                train_tokens=256, eval_tokens=128, batch_size=8, learning_rate=1e-2, min_learning_rate=1e-3,
                generation_batch_size=16, eval_batch_size=64,
                language=LanguageSpec(n_words=24, n_topics=2, topic_words=4))
    base.update(overrides)
    return ScratchSettings(**base)


PROFILES = {"quick": quick, "paper": paper, "smoke": smoke}


def for_profile(profile: str = "quick", **overrides) -> ScratchSettings:
    validate.choice("profile", profile, list(PROFILES))
    return PROFILES[profile](**overrides)


SETTING_NAMES = tuple(f.name for f in fields(ScratchSettings))
