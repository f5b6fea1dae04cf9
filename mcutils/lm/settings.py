"""What a language-model chain is: its settings, the two profiles, checks that fail fast.

Nothing here imports torch or transformers, so the command line can reject a
bad flag, an unknown model or an unreachable hub in well under two seconds,
before any long import or work.

The paper's procedure (Shumailov et al., §4; official code
``iliaishacked/curse_recurse``): OPT-125m fine-tuned on wikitext-2 cut into
64-token blocks, AdamW lr 2e-5, batch 128, cosine annealing to 1e-6, 5
epochs (10 in the second setting), the epoch with the lowest validation loss
kept; then every block's next 64 tokens by 5-way beam search form the next
training set.  :func:`paper` holds those values; :func:`quick` shrinks the
model and the data so a 10-generation chain runs on two CPU cores in minutes.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlparse

from .. import generational, runs, validate
from .language import LanguageSpec

TINY = "tiny"            # the locally built and pre-trained stand-in for OPT-125m
SYNTHETIC = "synthetic"  # the synthetic language of :mod:`mcutils.lm.language`
WIKITEXT = "wikitext"    # load_dataset("wikitext", "wikitext-2-raw-v1")
PROMPTS = ("original", "previous")
PRECISIONS = ("fp32", "bf16", "fp16")
ENGINE_VERSION = 1  # part of every run name: bump when the same settings would give other numbers
# Generation g of a chain trains with the seed ``seed * 1000 + g``, which numpy's seeding (Trainer's
# set_seed) takes only below 2**32: these bounds keep every derived seed in range.
MAX_GENERATIONS = 1000
MAX_SEED = (validate.MAX_SEED - (MAX_GENERATIONS - 1)) // 1000  # 4294966
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class TinyModelSpec:
    """The tiny OPT (``OPTConfig``) and its pre-training on the related language."""

    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ffn_dim: int = 256
    dropout: float = 0.0
    pretrain_tokens: int = 819_200
    pretrain_epochs: int = 2
    pretrain_learning_rate: float = 3e-3
    pretrain_batch_size: int = 64

    def __post_init__(self):
        validate.integer("hidden_size", self.hidden_size, minimum=8, maximum=1024)
        validate.integer("n_layers", self.n_layers, minimum=1, maximum=24)
        validate.integer("n_heads", self.n_heads, minimum=1, maximum=64)
        if self.hidden_size % self.n_heads:
            raise validate.ParameterError(
                f"hidden_size={self.hidden_size} must be a multiple of n_heads={self.n_heads}")
        validate.integer("ffn_dim", self.ffn_dim, minimum=8, maximum=16384)
        validate.number("dropout", self.dropout, minimum=0.0, maximum=0.9)
        validate.integer("pretrain_tokens", self.pretrain_tokens, minimum=1024)
        validate.positive_int("pretrain_epochs", self.pretrain_epochs)
        validate.number("pretrain_learning_rate", self.pretrain_learning_rate, minimum=0.0, strict_minimum=True)
        validate.positive_int("pretrain_batch_size", self.pretrain_batch_size)


@dataclass(frozen=True)
class SyntheticCorpusSpec:
    """How much text of the synthetic language each split holds (in tokens = words)."""

    train_tokens: int = 32_768
    validation_tokens: int = 8_192
    test_tokens: int = 8_192
    words_per_line: int = 32

    def __post_init__(self):
        for name in ("train_tokens", "validation_tokens", "test_tokens", "words_per_line"):
            validate.positive_int(name, getattr(self, name))


@dataclass(frozen=True)
class ChainSettings:
    """Every setting that changes a chain's numbers (the run name hashes them all).

    ``n_generations``, ``device`` and the runs folder are not settings of a
    chain: a chain run for 5 generations continues to 10 under the same name.
    """

    model: str = TINY
    dataset: str = SYNTHETIC
    dataset_config: str | None = None
    seed: int = 0
    policy: str = "replace"
    real_fraction: float = 0.0
    # Fine-tuning (Trainer): AdamW, cosine annealing to ``min_learning_rate``, best epoch kept.
    epochs: int = 5
    learning_rate: float = 2e-5
    min_learning_rate: float = 1e-6
    batch_size: int = 128
    weight_decay: float = 0.01
    precision: str = "fp32"
    # Data and generation: blocks of ``block_size`` tokens, each continued by as many new ones.
    block_size: int = 64
    num_beams: int = 5
    repetition_penalty: float = 1.0
    prompts: str = "original"
    generation_batch_size: int = 128
    eval_batch_size: int = 128
    max_train_blocks: int | None = None
    rare_max_count: int = 8
    # The offline stand-ins (used only with model="tiny" / dataset="synthetic").
    language: LanguageSpec = field(default_factory=LanguageSpec)
    corpus: SyntheticCorpusSpec = field(default_factory=SyntheticCorpusSpec)
    tiny: TinyModelSpec = field(default_factory=TinyModelSpec)

    def __post_init__(self):
        validate.seed("seed", self.seed, maximum=MAX_SEED)
        for name, spec in (("language", self.language), ("corpus", self.corpus), ("tiny", self.tiny)):
            expected = {"language": LanguageSpec, "corpus": SyntheticCorpusSpec, "tiny": TinyModelSpec}[name]
            if not isinstance(spec, expected):
                raise validate.ParameterError(f"{name} must be a {expected.__name__}, got {spec!r}")
        validate.seed("language.seed", self.language.seed)  # seeds the tiny model's pre-training
        _source_name("model", self.model, TINY)
        if self.dataset_config is not None and (not isinstance(self.dataset_config, str) or not self.dataset_config):
            raise validate.ParameterError(
                f"dataset_config must be a dataset configuration name or None, got {self.dataset_config!r}")
        _source_name("dataset", self.dataset, SYNTHETIC, WIKITEXT)
        if self.model == TINY and self.dataset != SYNTHETIC:
            raise validate.ParameterError(
                f"model='tiny' knows only the synthetic language's words; with dataset={self.dataset!r} "
                "use a real model (e.g. model='facebook/opt-125m')")
        generational.make_policy(self.policy, self.real_fraction)  # validates both
        validate.positive_int("epochs", self.epochs)
        validate.number("learning_rate", self.learning_rate, minimum=0.0, strict_minimum=True)
        validate.number("min_learning_rate", self.min_learning_rate, minimum=0.0, maximum=self.learning_rate)
        validate.positive_int("batch_size", self.batch_size)
        validate.number("weight_decay", self.weight_decay, minimum=0.0)
        validate.choice("precision", self.precision, PRECISIONS)
        validate.integer("block_size", self.block_size, minimum=2, maximum=4096)
        validate.integer("num_beams", self.num_beams, minimum=1, maximum=64)
        validate.number("repetition_penalty", self.repetition_penalty, minimum=0.0, strict_minimum=True)
        validate.choice("prompts", self.prompts, PROMPTS)
        validate.positive_int("generation_batch_size", self.generation_batch_size)
        validate.positive_int("eval_batch_size", self.eval_batch_size)
        if self.max_train_blocks is not None:
            validate.positive_int("max_train_blocks", self.max_train_blocks)
        validate.positive_int("rare_max_count", self.rare_max_count)
        if self.dataset == SYNTHETIC:
            for split in ("train", "validation", "test"):
                tokens = getattr(self.corpus, f"{split}_tokens")
                if tokens < self.block_size:
                    raise validate.ParameterError(
                        f"corpus.{split}_tokens={tokens} is less than one block of block_size={self.block_size}")
            n_train = self.corpus.train_tokens // self.block_size
            if self.max_train_blocks is not None:
                n_train = min(n_train, self.max_train_blocks)
            if n_train < self.batch_size:
                raise validate.ParameterError(
                    f"the synthetic training split has {n_train} blocks of {self.block_size} tokens, fewer "
                    f"than one batch of batch_size={self.batch_size}")
            if self.real_fraction > 0 and self.n_real_kept(n_train) == 0:
                raise validate.ParameterError(
                    f"real_fraction={self.real_fraction} keeps no block of the {n_train} training blocks; "
                    "raise it or the corpus")

    # -- derived --------------------------------------------------------------
    @property
    def policy_object(self) -> generational.Policy:
        return generational.make_policy(self.policy, self.real_fraction)

    def n_real_kept(self, n_blocks: int) -> int:
        return self.policy_object.n_real_kept(n_blocks)

    @property
    def is_synthetic(self) -> bool:
        return self.dataset == SYNTHETIC

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ChainSettings":
        data = dict(data)
        data["language"] = LanguageSpec(**data.get("language", {}))
        data["corpus"] = SyntheticCorpusSpec(**data.get("corpus", {}))
        data["tiny"] = TinyModelSpec(**data.get("tiny", {}))
        return cls(**data)

    def replace(self, **changes) -> "ChainSettings":
        return replace(self, **changes)

    def result_settings(self) -> dict:
        """The settings the numbers depend on (the stand-ins' only when used), with the engine version."""
        return result_view(self.to_dict())

    def generation0_settings(self) -> dict:
        """What generation 0 depends on: everything but the data policy (shared across policies)."""
        return generation0_view(self.to_dict())

    @property
    def run_name(self) -> str:
        """Readable and unique: ``<model>-<dataset>-<policy>-e<epochs>-s<seed>-<hash>``."""
        policy = self.policy + (f"{self.real_fraction:g}" if self.real_fraction else "")
        words = [_short(self.model), _short(self.dataset), policy, f"e{self.epochs}"]
        if self.repetition_penalty != 1.0:
            words.append(f"rp{self.repetition_penalty:g}")
        words.append(f"s{self.seed}")
        return runs.run_name("-".join(words), self.result_settings())


def result_view(settings: dict) -> dict:
    """:meth:`ChainSettings.result_settings` of a settings dict (as stored in a run's settings.json)."""
    out = dict(settings)
    if out.get("model") != TINY:
        out.pop("tiny", None)
    if out.get("dataset") != SYNTHETIC:
        out.pop("language", None)
        out.pop("corpus", None)
    out["engine"] = ENGINE_VERSION
    return out


def generation0_view(settings: dict) -> dict:
    out = result_view(settings)
    out.pop("policy", None)
    out.pop("real_fraction", None)
    return out


def _short(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", Path(name).name if os.path.isdir(name) else name.split("/")[-1])


def _source_name(kind: str, name: str, *builtin: str) -> str:
    if not isinstance(name, str) or not name:
        raise validate.ParameterError(f"{kind} must be a non-empty string, got {name!r}")
    if name in builtin or os.path.isdir(name) or _HUB_ID.match(name):
        return name
    raise validate.ParameterError(
        f"unknown {kind} {name!r}: not one of {list(builtin)}, not a local folder and not a Hugging Face "
        f"hub id (owner/name)")


# -- the two profiles ------------------------------------------------------------

def quick(**overrides) -> ChainSettings:
    """The quick profile: the tiny OPT on the synthetic language, two CPU cores, minutes.

    The paper's learning rate 2e-5 barely moves a model this small in a few
    dozen steps, so fine-tuning uses 1e-3 with batch 32; everything else
    (5-way beam search, 64-token blocks, cosine to 1e-6, best epoch kept)
    follows the paper.
    """
    base = dict(learning_rate=1e-3, batch_size=32)
    base.update(overrides)
    return ChainSettings(**base)


def paper(**overrides) -> ChainSettings:
    """The paper's setting 1: OPT-125m on wikitext-2-raw-v1, lr 2e-5, batch 128, 5 epochs."""
    base = dict(model="facebook/opt-125m", dataset=WIKITEXT, learning_rate=2e-5, batch_size=128,
                epochs=5, generation_batch_size=128, eval_batch_size=128)
    base.update(overrides)
    return ChainSettings(**base)


def smoke(**overrides) -> ChainSettings:
    """Toy sizes for tests and demos: a chain of a few generations in seconds (not a result)."""
    base = dict(
        block_size=16, epochs=2, learning_rate=3e-3, batch_size=16, generation_batch_size=32,
        eval_batch_size=64,
        language=LanguageSpec(n_words=64, n_topics=4, topic_words=8),
        corpus=SyntheticCorpusSpec(train_tokens=1024, validation_tokens=256, test_tokens=256),
        tiny=TinyModelSpec(hidden_size=32, n_layers=1, n_heads=2, ffn_dim=64, pretrain_tokens=16384,
                           pretrain_epochs=1, pretrain_learning_rate=1e-2, pretrain_batch_size=32))
    base.update(overrides)
    return ChainSettings(**base)


PROFILES = {"quick": quick, "paper": paper, "smoke": smoke}


def for_profile(profile: str = "quick", **overrides) -> ChainSettings:
    validate.choice("profile", profile, list(PROFILES))
    return PROFILES[profile](**overrides)  # "smoke": toy sizes for tests


SETTING_NAMES = tuple(f.name for f in fields(ChainSettings))


def check_n_generations(n_generations) -> int:
    """A chain's length: 1 to :data:`MAX_GENERATIONS` models, generation 0 included."""
    return validate.integer("n_generations", n_generations, minimum=1, maximum=MAX_GENERATIONS)


def check_precision(precision: str, device: str) -> str:
    """Refuse a precision the (resolved) device cannot compute in, rather than computing in another.

    fp16 mixed precision needs a CUDA GPU; bf16 needs the CPU or a GPU that
    supports it; MPS runs fp32 only here.
    """
    validate.choice("precision", precision, PRECISIONS)
    kind = str(device).split(":")[0]
    if precision == "fp16" and kind != "cuda":
        raise validate.ParameterError(
            f"precision='fp16' needs a CUDA GPU; on device={device!r} use precision='fp32' (or 'bf16' on the CPU)")
    if precision == "bf16" and kind == "mps":
        raise validate.ParameterError("precision='bf16' is not supported on device='mps' here; use 'fp32'")
    if precision == "bf16" and kind == "cuda":
        import torch
        if not torch.cuda.is_bf16_supported():
            raise validate.ParameterError(
                "precision='bf16' needs a GPU with bfloat16 support (Ampere or newer); use 'fp16' or 'fp32'")
    return precision


# -- the hub: fail in seconds, not after a minute of retries -------------------------

class HubUnavailable(validate.ParameterError):
    """A model or dataset needs the Hugging Face hub, which cannot be used now."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether the user switched the hub off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 1.5) -> bool:
    """One HTTPS request to the hub's address: does a real hub answer within about ``timeout`` s?

    A bare TCP connection is not enough: a proxy or sandbox may accept it and
    then fail every request, which ``huggingface_hub`` retries for a minute.
    Any HTTP status counts as an answer; a connection, TLS or timeout error does not.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(hub_endpoint() + "/api/whoami-v2", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True  # the hub answered (e.g. 401 without a token)
    except (OSError, ValueError):
        return False


def needs_hub(settings: ChainSettings) -> list[tuple[str, str]]:
    """The (kind, name) pairs that come from the hub rather than mcutils or a local folder."""
    out = []
    if settings.model != TINY and not os.path.isdir(settings.model):
        out.append(("model", settings.model))
    if settings.dataset != SYNTHETIC and not os.path.isdir(settings.dataset):
        out.append(("dataset", settings.dataset))
    return out


def check_hub(settings: ChainSettings, timeout: float = 1.5) -> str:
    """Fail at once when a hub model or dataset cannot be had; return the mode to load in.

    ``"local"``: nothing comes from the hub.  ``"online"``: the hub answers.
    ``"offline"``: offline mode is on (or the hub did not answer within
    ``timeout`` seconds and offline mode has been switched on, so that cached
    files load without a minute of retries) and everything wanted looks cached.
    """
    wanted = needs_hub(settings)
    if not wanted:
        return "local"
    unreachable = False
    if not hub_offline():
        if hub_reachable(timeout):
            return "online"
        unreachable = True
        go_offline()
    missing = [(kind, name) for kind, name in wanted if not _maybe_cached(kind, name)]
    if missing:
        what = " and ".join(f"{kind} {name!r}" for kind, name in missing)
        if unreachable:
            raise HubUnavailable(
                f"{what} must be downloaded from {hub_endpoint()}, which did not answer within {timeout:g} s. "
                f"{QUICK_WORKS_OFFLINE} To use the hub, connect to the internet.")
        raise HubUnavailable(offline_advice(what, plural=len(missing) > 1))
    return "offline"


QUICK_WORKS_OFFLINE = ("The quick profile (model='tiny', dataset='synthetic', the defaults) runs offline; "
                       "so do local folders in Hugging Face format.")


def offline_advice(what: str, plural: bool = False) -> str:
    return (f"{what} {'are' if plural else 'is'} not in the local Hugging Face cache and the hub is switched off "
            f"(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). {QUICK_WORKS_OFFLINE} To download it, go online "
            f"and unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE.")


def go_offline() -> None:
    """Switch the hub libraries to offline mode, also when they are imported already."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"
    import sys
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True
        sys.modules["datasets"].config.HF_DATASETS_OFFLINE = True


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                               / "huggingface")).expanduser()


def _maybe_cached(kind: str, name: str) -> bool:
    """A cheap look into the caches: False means surely absent (True may still fail to load)."""
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", _hf_home() / "hub")).expanduser()
    variants = [name] + ([f"Salesforce/{name}"] if name == WIKITEXT else [])
    if kind == "model":
        return any((hub_cache / f"models--{v.replace('/', '--')}").is_dir() for v in variants)
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", _hf_home() / "datasets")).expanduser()
    return any((hub_cache / f"datasets--{v.replace('/', '--')}").is_dir()
               or (datasets_cache / v.replace("/", "___")).is_dir() for v in variants)
