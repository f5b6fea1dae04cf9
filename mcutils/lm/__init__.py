"""The language-model engine: fine-tune, regenerate by 5-way beam search, score, resume.

Shumailov et al., §4 (OPT-125m on wikitext-2) as one resumable call, with the
offline stand-ins of the quick profile: a tiny OPT pre-trained by mcutils (and shipped with it) and a
synthetic language whose likelihood is exact (:mod:`~mcutils.lm.language`).

Typical use (a chapter)::

    from mcutils import lm
    settings = lm.for_profile(profile, seed=seed, policy="replace")     # or lm.quick(...), lm.paper(...)
    chain = lm.run_chain(settings, n_generations, runs_dir=runs_dir, profile=profile, device=device)
    chain.series("test_perplexity")                        # Fig. 1 (right), one value per generation
    chain.per_sequence(g)["gen0_perplexity"]              # Fig. 1 (left): generation g's data, scored by gen 0
    chain.real_per_sequence()["gen0_perplexity"]          # the same for the real training blocks
    chain.examples()[g]["continuation"]                   # Example 1: the fixed prompt's continuation
    chain.series("samples", "true_perplexity", "q50")     # synthetic only: the truth's verdict on the data
    chain.series("samples", "tail", "rare_word_survival") # share of the real data's rare words still present

``run_chain`` returns at once, reading the runs folder, when the chain is
complete; generation 0 is shared by every data policy with otherwise equal
settings.  Each ``gen_<NN>/metrics.json`` holds: ``training_data`` (sizes,
real blocks, blocks by source generation), ``training`` (loss per epoch, best
epoch), ``test_perplexity``, ``validation_perplexity``,
``test_perplexity_by_true_probability`` (synthetic: the model on rare vs
common test tokens), ``samples`` (summaries of ``gen0_perplexity`` and
``true_perplexity``, ``tail`` survival shares, ``repeated_4gram_share``) and
``example`` (``samples`` is null, and the generation has no data files, for
a chain's last generation run with ``last_data=False``: its data would train
no model); generation 0 adds ``base_test_perplexity`` (zero-shot),
``real_data`` (the same summaries for the real blocks),
``source_true_perplexity`` and ``n_parameters``.

Modules: :mod:`~mcutils.lm.settings` (what a chain is; fast checks, no
torch), :mod:`~mcutils.lm.hub` (is the hub needed and reachable: seconds, not
a minute of retries), :mod:`~mcutils.lm.language`, :mod:`~mcutils.lm.data` (blocks),
:mod:`~mcutils.lm.model` (the pre-trained model and its cache),
:mod:`~mcutils.lm.train` (Trainer fine-tuning), :mod:`~mcutils.lm.generate`
(beam search), :mod:`~mcutils.lm.metrics`, :mod:`~mcutils.lm.dist` (several
processes), :mod:`~mcutils.lm.chain`, and ``python -m mcutils.lm``.

Importing this package is cheap (no torch); the heavy modules load on use.
"""
from .language import LanguageSpec
from .settings import (ChainSettings, SyntheticCorpusSpec, TinyModelSpec, for_profile, paper, quick,
                       smoke)

__all__ = ["ChainSettings", "LanguageSpec", "SyntheticCorpusSpec", "TinyModelSpec", "quick", "paper", "smoke",
           "for_profile", "chapter_settings", "run_chain", "run_chains", "load_chain", "chain_dir", "ChainResult",
           "SyntheticLanguage", "language_of", "base_model_origin", "chain_seconds", "standin_tries"]


def chapter_settings(profile: str, lm_profile: str = "", lm_model: str = "", lm_dataset: str = "",
                     lm_train_tokens: int = 0, quick_profile: str = "quick",
                     lm_batch_size: int = 0) -> tuple[str, dict]:
    """``(engine profile, overrides)`` from a chapter's ``lm_*`` parameters.

    One registry of profiles: ``lm_profile`` empty follows the book's
    ``profile`` (``"paper"`` runs the engine's paper profile, anything else
    ``quick_profile``: the quick one, or ``"small"``, the unchecked stand-in of
    :func:`~mcutils.lm.settings.small`).  ``lm_model`` / ``lm_dataset`` empty keep the engine profile's;
    ``lm_train_tokens`` (0: the profile's, or all of a real dataset) sizes
    the training data: the synthetic language's training split, or a cap on
    a real dataset's (its first ``lm_train_tokens // block_size`` blocks,
    ``max_train_blocks``; the paper-smoke profile shrinks wikitext's
    stand-in so); ``lm_batch_size`` (0: the profile's, the paper's 128)
    is fine-tuning's batch size, which a capped training set must fill at
    least once.  A chapter then builds each chain's settings as
    ``for_profile(engine_profile, **overrides, seed=..., policy=...)``.
    """
    from .. import validate

    engine_profile = lm_profile or ("paper" if profile == "paper" else quick_profile)
    validate.choice("lm_profile", engine_profile, ["quick", "paper", "small"])
    validate.non_negative_int("lm_train_tokens", lm_train_tokens)
    validate.non_negative_int("lm_batch_size", lm_batch_size)
    overrides = {key: value for key, value in (("model", lm_model), ("dataset", lm_dataset),
                                               ("batch_size", lm_batch_size)) if value}
    if lm_train_tokens:
        base = for_profile(engine_profile, **overrides)
        if base.is_synthetic:
            overrides["corpus"] = SyntheticCorpusSpec(train_tokens=lm_train_tokens)
        elif lm_train_tokens < base.block_size:
            raise validate.ParameterError(
                f"lm_train_tokens={lm_train_tokens} is less than one block of {base.block_size} tokens; "
                f"use 0 (all of {base.dataset!r}) or at least {base.block_size}")
        else:
            overrides["max_train_blocks"] = lm_train_tokens // base.block_size
    return engine_profile, overrides


def language_of(settings: ChainSettings):
    """The synthetic language a chain's settings define (its exact likelihood, topics and tokenizer)."""
    from .language import SyntheticLanguage
    return SyntheticLanguage(settings.language)


def base_model_origin(settings: ChainSettings, device: str = "cpu") -> str:
    """Where the chains' pre-trained model comes from, in words (see :func:`mcutils.lm.model.origin`)."""
    from .model import origin
    return origin(settings, device)


def chain_seconds(chain) -> float:
    """Seconds a chain's generations took when they were computed (their ``timing.json``; 0 if absent)."""
    import json

    from .. import runs
    total = 0.0
    for g in range(chain.n_models):
        path = runs.generation_dir(chain.run_dir, g) / "timing.json"
        if path.is_file():
            total += float(json.loads(path.read_text()).get("total_s", 0.0))
    return total


def standin_tries() -> list[dict]:
    """The recorded tries that chose the quick profile's stand-in (``benchmarks/standin/t*.json`` of the
    checkout; an empty list where mcutils is installed without one, as on Colab)."""
    import json

    from ..runs import repo_root
    root = repo_root()
    if root is None:
        return []
    return [json.loads(p.read_text()) for p in sorted((root / "benchmarks" / "standin").glob("[ts]*.json"))
            if not p.name.endswith((".every-chain.json", ".cost.json"))]


def __getattr__(name):
    if name in ("run_chain", "run_chains", "load_chain", "chain_dir", "ChainResult"):
        from . import chain
        return getattr(chain, name)
    if name == "SyntheticLanguage":
        from .language import SyntheticLanguage
        return SyntheticLanguage
    raise AttributeError(f"module 'mcutils.lm' has no attribute {name!r}")
