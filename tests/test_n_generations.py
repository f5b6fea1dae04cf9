"""One meaning of ``n_generations`` everywhere: the refits after generation 0.

Every chain given the same ``n_generations`` returns ``n_generations + 1``
models (or rows), generation 0 included, so a paper's "10 models a chain"
is ``n_generations=9`` for every model family of the book.
"""
from __future__ import annotations

import numpy as np
import pytest

from mcutils import generational, gmm, simulate, theory, vae
from mcutils.lm import run_chain, smoke

N_GENERATIONS = 3


def test_the_numpy_chains_return_n_generations_plus_one_rows():
    g = N_GENERATIONS
    assert simulate.discrete_chain([0.5, 0.5], 10, g, n_runs=2).shape[1] == g + 1
    means, covs = simulate.gaussian_chain(0.0, 1.0, 10, g, n_runs=2)
    assert means.shape[1] == covs.shape[1] == g + 1
    assert simulate.linear_regression_chain(2, 10, 1.0, g, n_runs=2).shape[1] == g + 1
    assert theory.linear_regression_error(2, 10, 1.0, g).shape == (g + 1,)
    assert theory.gaussian_variance_factor(10, g).shape == (g + 1,)
    loop = generational.generational_loop(np.zeros(4), lambda data, rng: data.mean(),
                                          lambda model, n, rng: rng.normal(model, 1.0, n), g)
    assert len(list(loop)) == g + 1


def test_the_gmm_chain_returns_n_generations_plus_one_fits():
    chain = gmm.gmm_chain(50, N_GENERATIONS, n_runs=1)
    assert chain.means.shape[1] == N_GENERATIONS + 1


@pytest.mark.slow
def test_the_vae_chain_returns_n_generations_plus_one_models(tmp_path):
    images, labels = vae.load_images("digits")
    chain = vae.vae_chain(images[:256], labels[:256], N_GENERATIONS, epochs=1, batch_size=128, n_grid=2,
                          runs_root=tmp_path, log=lambda *_: None)
    assert len(chain.metrics) == N_GENERATIONS + 1


@pytest.mark.slow
def test_the_language_model_chain_returns_n_generations_plus_one_models(tmp_path):
    chain = run_chain(smoke(), N_GENERATIONS, runs_dir=tmp_path, profile="smoke", progress=False,
                      log=lambda *_: None)
    assert len(chain.metrics) == N_GENERATIONS + 1 and chain.n_generations == N_GENERATIONS
