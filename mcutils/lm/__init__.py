"""The language-model engine: fine-tune, regenerate by 5-way beam search, score, resume.

Shumailov et al., §4 (OPT-125m on wikitext-2) as one resumable call,
:func:`run_chain`, with the offline stand-ins of the quick profile (a tiny
OPT pre-trained here and a synthetic language whose likelihood is exact).

Modules: :mod:`~mcutils.lm.settings` (what a chain is; fast checks),
:mod:`~mcutils.lm.language` (the synthetic language and its tokenizer),
:mod:`~mcutils.lm.data` (blocks), :mod:`~mcutils.lm.model` (the pre-trained
model), :mod:`~mcutils.lm.train` (Trainer fine-tuning),
:mod:`~mcutils.lm.generate` (beam search), :mod:`~mcutils.lm.metrics`,
:mod:`~mcutils.lm.chain` (the chain and its runs folder) and
``python -m mcutils.lm`` (the command line).

Importing this package is cheap (no torch); the heavy modules load on use.
"""
from .settings import ChainSettings, LanguageSpec, SyntheticCorpusSpec, TinyModelSpec, for_profile, paper, quick

__all__ = ["ChainSettings", "LanguageSpec", "SyntheticCorpusSpec", "TinyModelSpec", "quick", "paper",
           "for_profile", "run_chain", "load_chain", "chain_dir", "ChainResult", "SyntheticLanguage"]


def __getattr__(name):
    if name in ("run_chain", "load_chain", "chain_dir", "ChainResult"):
        from . import chain
        return getattr(chain, name)
    if name == "SyntheticLanguage":
        from .language import SyntheticLanguage
        return SyntheticLanguage
    raise AttributeError(f"module 'mcutils.lm' has no attribute {name!r}")
