"""Shared by the language-model chain tests: a private model cache and a toy chain of a given length."""
from __future__ import annotations

import os

import pytest

from mcutils.lm import chain, settings

N_MODELS = 2  # generation 0 and one refit (n_generations=1)


def private_cache(tmp_path_factory):
    """Environment with a model cache shared by the LM test files of this session, hubs offline."""
    cache = tmp_path_factory.getbasetemp() / "mcutils-lm-cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MCUTILS_CACHE_DIR", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        yield {**os.environ}


def smoke_chain(runs_dir, n_models=N_MODELS, log=None, last_data=True, **overrides):
    """A chain of ``n_models`` models (``n_generations = n_models - 1``) at the smoke settings."""
    return chain.run_chain(settings.smoke(**overrides), n_models - 1, runs_dir=runs_dir, device="cpu",
                           progress=False, last_data=last_data, log=log or (lambda message: None))
