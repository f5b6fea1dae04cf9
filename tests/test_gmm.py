"""The GMM family (mcutils.gmm): the closed-form L2 distance, the batched EM against scikit-learn, the chain."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from mcutils import gmm
from mcutils.validate import ParameterError


def batch(mixture: gmm.Mixture, n_runs: int) -> gmm.Mixture:
    return gmm.Mixture(*(np.broadcast_to(a, (n_runs, *a.shape)) for a in
                         (mixture.weights, mixture.means, mixture.covariances)))


def other_mixture() -> gmm.Mixture:
    return gmm.Mixture(np.array([0.3, 0.7]), np.array([[-1.0, 0.5], [2.0, -1.0]]),
                       np.array([[[0.6, 0.2], [0.2, 0.9]], [[1.5, -0.4], [-0.4, 0.7]]]))


def density(mixture: gmm.Mixture, points: np.ndarray) -> np.ndarray:
    return sum(w * multivariate_normal(m, c).pdf(points)
               for w, m, c in zip(mixture.weights, mixture.means, mixture.covariances))


@pytest.mark.parametrize("source", gmm.SOURCES)
def test_l2_distance_matches_numerical_integration(source):
    p, q = gmm.source_mixture(source), other_mixture()
    axis = np.linspace(-12, 12, 1201)
    xx, yy = np.meshgrid(axis, axis)
    points = np.stack([xx.ravel(), yy.ravel()], axis=-1)
    step = axis[1] - axis[0]
    numeric = np.sqrt(((density(p, points) - density(q, points)) ** 2).sum() * step ** 2)
    assert gmm.l2_distance(p, q) == pytest.approx(numeric, rel=1e-4)
    assert gmm.l2_distance(q, p) == pytest.approx(numeric, rel=1e-4)


def test_l2_distance_is_zero_for_identical_mixtures_and_broadcasts():
    p, q = gmm.source_mixture(), other_mixture()
    assert gmm.l2_distance(p, p) < 1e-6
    # the same mixture written with its components in the other order, and with a duplicated component
    swapped = gmm.Mixture(p.weights[::-1], p.means[::-1], p.covariances[::-1])
    split = gmm.Mixture(np.array([0.25, 0.25, 0.5]), p.means[[0, 0, 1]], p.covariances[[0, 0, 1]])
    assert gmm.l2_distance(p, swapped) < 1e-6
    assert gmm.l2_distance(p, split) < 1e-6
    # a batch of (2, 3) mixtures against one: shape (2, 3), each entry as computed alone
    stack = gmm.Mixture(*(np.stack([np.stack([a, b, a]), np.stack([b, b, a])]) for a, b in
                          ((p.weights, q.weights), (p.means, q.means), (p.covariances, q.covariances))))
    distances = gmm.l2_distance(p, stack)
    assert distances.shape == (2, 3)
    expected = gmm.l2_distance(p, q)
    np.testing.assert_allclose(distances, [[0, expected, 0], [expected, expected, 0]], atol=1e-6)


def test_sample_mixture_has_the_mixture_moments():
    truth = gmm.source_mixture()
    x = gmm.sample_mixture(batch(truth, 2), 200_000, np.random.default_rng(0))
    assert x.shape == (200_000, 2, 2)
    mean = (truth.weights[:, None] * truth.means).sum(0)
    second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(truth.weights, truth.means, truth.covariances))
    for r in range(2):
        np.testing.assert_allclose(x[:, r].mean(0), mean, atol=0.03)
        np.testing.assert_allclose(np.cov(x[:, r].T, bias=True) + np.outer(*(x[:, r].mean(0),) * 2), second,
                                   atol=0.1)
        assert np.mean(x[:, r, 0] < 0) == pytest.approx(0.5, abs=0.01)  # the clusters sit at x = -3 and x = 3
    assert not np.allclose(x[:, 0], x[:, 1])  # the runs are independent draws


def data_of_runs(n=600, n_runs=4, seed=1):
    return gmm.sample_mixture(batch(gmm.source_mixture(), n_runs), n, np.random.default_rng(seed))


def test_fit_em_reaches_sklearns_parameters_from_the_same_start():
    x = data_of_runs()
    rng = np.random.default_rng(2)
    start = gmm.initial_mixture(x, gmm.kmeans_responsibilities(x, 2, rng))
    ours = gmm.fit_em(x, 2, init=start)
    for r in range(x.shape[1]):
        reference = GaussianMixture(2, covariance_type="full", weights_init=start.weights[r],
                                    means_init=start.means[r],
                                    precisions_init=np.linalg.inv(start.covariances[r])).fit(x[:, r])
        np.testing.assert_allclose(ours.mixture.weights[r], reference.weights_, atol=1e-9)
        np.testing.assert_allclose(ours.mixture.means[r], reference.means_, atol=1e-9)
        np.testing.assert_allclose(ours.mixture.covariances[r], reference.covariances_, atol=1e-9)
        assert ours.n_iter[r] == reference.n_iter_
        assert ours.lower_bound[r] == pytest.approx(reference.lower_bound_, abs=1e-9)
    assert ours.converged.all()


def test_fit_em_from_a_poor_start_converges_like_sklearn():
    # a start far from the answer makes EM iterate for a while, with runs stopping at different iterations
    x = data_of_runs(n=400, n_runs=3, seed=5)
    start = gmm.Mixture(np.full((3, 2), 0.5), np.array([[[0.0, 0.0], [0.1, 0.1]]] * 3),
                        np.broadcast_to(np.eye(2) * 9.0, (3, 2, 2, 2)).copy())
    start.means[1] += 0.5
    ours = gmm.fit_em(x, 2, init=start, tol=1e-6)
    for r in range(3):
        reference = GaussianMixture(2, tol=1e-6, weights_init=start.weights[r], means_init=start.means[r],
                                    precisions_init=np.linalg.inv(start.covariances[r])).fit(x[:, r])
        np.testing.assert_allclose(ours.mixture.means[r], reference.means_, atol=1e-7)
        assert ours.n_iter[r] == reference.n_iter_
    assert ours.n_iter.min() > 3


def test_fit_em_and_sklearn_defaults_find_the_same_mixture():
    x = data_of_runs(seed=3)
    ours = gmm.fit_em(x, 2, np.random.default_rng(0)).mixture
    reference = gmm.fit_sklearn(x, 2, np.random.default_rng(0))
    # each EM stops once the log-likelihood changes by < tol, from its own start: equal up to that stopping point,
    # far closer to each other than to the truth
    between = gmm.l2_distance(ours, reference)
    assert np.all(between < 1e-3)
    assert np.all(between < 0.1 * gmm.l2_distance(gmm.source_mixture(), ours))


def test_kmeans_labels_match_sklearn_up_to_permutation():
    x = data_of_runs(n=500, n_runs=3, seed=4)
    resp = gmm.kmeans_responsibilities(x, 2, np.random.default_rng(0))
    assert resp.shape == (500, 3, 2)
    np.testing.assert_array_equal(resp.sum(-1), 1.0)
    for r in range(3):
        ours = resp[:, r].argmax(-1)
        theirs = KMeans(2, n_init=1, random_state=0).fit(x[:, r]).labels_
        agreement = np.mean(ours == theirs)
        assert max(agreement, 1 - agreement) == 1.0


def test_chain_shapes_determinism_and_collapse():
    chain = gmm.gmm_chain(60, 300, n_runs=3, seed=7, snapshot_generations=[0, 300])
    assert chain.weights.shape == (3, 301, 2)
    assert chain.means.shape == (3, 301, 2, 2)
    assert chain.covariances.shape == (3, 301, 2, 2, 2)
    assert chain.l2.shape == (3, 301)
    assert sorted(chain.snapshots) == [0, 300] and chain.snapshots[0].shape == (60, 2)
    np.testing.assert_allclose(chain.weights.sum(-1), 1.0)
    again = gmm.gmm_chain(60, 300, n_runs=3, seed=7)
    np.testing.assert_array_equal(chain.covariances, again.covariances)
    other = gmm.gmm_chain(60, 300, n_runs=3, seed=8)
    assert not np.allclose(chain.covariances, other.covariances)
    # with 60 points a generation the spread collapses within a few hundred generations
    variance = chain.mean_component_variance()
    assert np.all(variance[:, -1] < 0.1 * variance[:, 0])
    assert np.all(chain.l2[:, -1] > 5 * chain.l2[:, 0])
    heavy_first = chain.sorted_weights()
    assert np.all(heavy_first[..., 0] >= heavy_first[..., 1])
    assert chain.component_variance().shape == (3, 301, 2)


def test_accumulate_chain_keeps_the_original_data():
    replace = gmm.gmm_chain(60, 40, n_runs=4, seed=1)
    keep = gmm.gmm_chain(60, 40, n_runs=4, seed=1, policy="accumulate")
    assert keep.policy == "accumulate"
    np.testing.assert_array_equal(keep.l2[:, 0], replace.l2[:, 0])  # same real data, same first fit
    assert np.median(keep.l2[:, -1]) < np.median(replace.l2[:, -1])


def test_sklearn_backend_runs_the_same_loop():
    reference = gmm.gmm_chain(300, 3, n_runs=2, seed=0, backend="sklearn")
    assert reference.backend == "sklearn" and reference.l2.shape == (2, 4)
    ours = gmm.gmm_chain(300, 3, n_runs=2, seed=0)
    # the same real data: the two generation-0 fits agree far better than either matches the original
    for r in range(2):
        between = gmm.l2_distance(ours.generation(0, r), reference.generation(0, r))
        assert between < 0.1 * reference.l2[r, 0]


def test_one_blob_source_is_fitted_with_two_components():
    chain = gmm.gmm_chain(200, 2, n_runs=2, seed=0, source="one-blob")
    assert chain.source.n_components == 1 and chain.weights.shape == (2, 3, 2)
    assert np.all(chain.l2[:, 0] < 0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_samples=3), "n_samples must be at least"),
    (dict(n_samples=0), "n_samples"),
    (dict(n_runs=0), "n_runs"),
    (dict(backend="torch"), "backend must be one of"),
    (dict(source="three-blobs"), "source must be one of"),
    (dict(policy="keep-all"), "policy must be one of"),
    (dict(snapshot_generations=[0, 11]), r"snapshot_generations\[1\] must be an integer <= 10"),
    (dict(n_generations=-1), "n_generations"),
])
def test_bad_parameters_fail_at_once(kwargs, message):
    params = dict(n_samples=50, n_generations=10) | kwargs
    with pytest.raises(ParameterError, match=message):
        gmm.gmm_chain(**params)


def test_fit_em_rejects_bad_input():
    with pytest.raises(ParameterError, match="shape"):
        gmm.fit_em(np.zeros((10, 2)), 2, np.random.default_rng(0))
    with pytest.raises(ParameterError, match="rng"):
        gmm.fit_em(np.zeros((10, 1, 2)), 2)


@pytest.mark.parametrize("backend", gmm.BACKENDS)
def test_official_chain_runs_and_is_deterministic(backend):
    chain = gmm.official_chain(200, 3, n_runs=2, seed=[5, 4], backend=backend)
    assert chain.backend == backend and chain.n_generations == 3
    assert chain.weights.shape == (2, 4, 2) and chain.covariances.shape == (2, 4, 2, 2, 2)
    assert chain.spread.shape == chain.sorted_spread().shape == (2, 4, 2)
    np.testing.assert_allclose(chain.spread ** 2, np.trace(chain.covariances, axis1=-2, axis2=-1) / 2)
    assert np.all(np.diff(chain.sorted_spread(), axis=-1) >= 0)
    np.testing.assert_allclose(chain.weights.sum(-1), 1.0)
    # index 0 is the reference fit: no distance to itself; every fit of a standard blob starts near it
    np.testing.assert_allclose(chain.l2_squared_to_first[:, 0], 0.0, atol=1e-12)
    assert np.all(chain.l2_squared_to_source[:, 0] < 0.01)
    assert np.all((chain.sorted_spread()[:, 0] > 0.5) & (chain.sorted_spread()[:, 0] < 1.5))
    assert chain.converged.all() and np.all(chain.n_iter >= 1)
    again = gmm.official_chain(200, 3, n_runs=2, seed=[5, 4], backend=backend)
    np.testing.assert_array_equal(chain.covariances, again.covariances)
    np.testing.assert_array_equal(chain.l2_squared_to_first, again.l2_squared_to_first)
    other = gmm.official_chain(200, 3, n_runs=2, seed=[6, 4], backend=backend)
    assert not np.allclose(chain.covariances, other.covariances)


def test_official_chain_defaults_are_the_official_notebooks_settings():
    import inspect
    defaults = {k: p.default for k, p in inspect.signature(gmm.official_chain).parameters.items()}
    assert defaults["n_samples"] == 1000 and defaults["n_generations"] == 2050
    assert (defaults["n_components"], defaults["tol"], defaults["max_iter"]) == (2, 1e-5, 2000)
    assert defaults["backend"] == "sklearn"
    assert gmm.OFFICIAL_PRINTED == dict(spread=(0.0100, 0.0112), l2_squared=536.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_samples=0), "n_samples"),
    (dict(n_samples=3), "n_samples must be at least"),
    (dict(n_generations=-1), "n_generations"),
    (dict(n_runs=0), "n_runs"),
    (dict(seed=-1), "seed"),
    (dict(n_components=0), "n_components"),
    (dict(tol=0), "tol must be > 0"),
    (dict(tol=float("nan")), "tol"),
    (dict(max_iter=0), "max_iter"),
    (dict(backend="torch"), "backend must be one of"),
])
def test_official_chain_rejects_bad_parameters(kwargs, message):
    params = dict(n_samples=50, n_generations=2) | kwargs
    with pytest.raises(ParameterError, match=message):
        gmm.official_chain(**params)
