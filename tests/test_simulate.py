"""Tests of mcutils.simulate: shapes, generation 0, seeds, validation, and laws.

Statistical checks compare a Monte Carlo mean with a closed form (or with a
plain per-run loop that draws actual samples) and allow ``Z`` standard
errors.  With ``Z = 4.5`` a correct sampler fails one check with probability
about 7e-6; the seeds are fixed, so the outcome is deterministic anyway, and
a wrong law (a wrong ddof, an off-by-one generation, a missing parallel-axis
term) is off by many standard errors at these sample sizes.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mcutils import simulate, theory
from mcutils.generational import Policy, generational_loop
from mcutils.results import Z
from mcutils.validate import ParameterError


def assert_mean_close(samples, expected, se=None, z=Z):
    """Mean over axis 0 within ``z`` standard errors (sample SE unless given)."""
    samples = np.asarray(samples, dtype=float)
    mean = samples.mean(axis=0)
    if se is None:
        se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    gap = np.abs(mean - expected)
    assert np.all(gap <= z * se), f"mean {mean} vs expected {expected}: gap/se {gap / se}"


def assert_same_mean(a, b, z=Z):
    """Two independent samples (axis 0) have the same mean, within ``z`` SE of the difference."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    se = np.sqrt(a.var(axis=0, ddof=1) / len(a) + b.var(axis=0, ddof=1) / len(b))
    gap = np.abs(a.mean(axis=0) - b.mean(axis=0))
    assert np.all(gap <= z * se), f"means {a.mean(axis=0)} vs {b.mean(axis=0)}: gap/se {gap / se}"


P0 = np.array([0.5, 0.3, 0.15, 0.05])


# ------------------------------------------------------------------ discrete

def test_discrete_shape_row0_and_frequencies():
    out = simulate.discrete_chain(P0, 20, 7, n_runs=5, seed=1)
    assert out.shape == (5, 8, 4)
    np.testing.assert_array_equal(out[:, 0], np.broadcast_to(P0, (5, 4)))
    np.testing.assert_allclose(out.sum(axis=-1), 1.0)
    counts = out[:, 1:] * 20
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


def test_discrete_seed_determinism():
    a = simulate.discrete_chain(P0, 10, 5, n_runs=3, seed=4)
    np.testing.assert_array_equal(a, simulate.discrete_chain(P0, 10, 5, n_runs=3, seed=4))
    assert not np.array_equal(a, simulate.discrete_chain(P0, 10, 5, n_runs=3, seed=5))
    b = simulate.discrete_chain(P0, 10, 5, n_runs=3, seed=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)


def test_discrete_zero_generations_and_delta_absorbs():
    assert simulate.discrete_chain(P0, 10, 0, n_runs=2).shape == (2, 1, 4)
    delta = np.array([0.0, 1.0, 0.0])
    out = simulate.discrete_chain(delta, 5, 10, n_runs=3)
    np.testing.assert_array_equal(out, np.broadcast_to(delta, out.shape))
    # a lost category never comes back
    out = simulate.discrete_chain(P0, 5, 40, n_runs=200, seed=2)
    lost = out == 0
    assert np.all(lost[:, 1:] >= lost[:, :-1])


def test_discrete_diversity_matches_closed_form():
    m, g, r = 20, 30, 4000
    out = simulate.discrete_chain(P0, m, g, n_runs=r, seed=3)
    diversity = 1 - (out[:, 1:] ** 2).sum(axis=-1)
    assert_mean_close(diversity, theory.discrete_diversity(P0, m, g)[1:])


def test_discrete_one_step_is_multinomial():
    m, r = 15, 20000
    out = simulate.discrete_chain(P0, m, 1, n_runs=r, seed=4)[:, 1]
    # each category's frequency: mean p, variance p(1-p)/M
    se = np.sqrt(P0 * (1 - P0) / m / r)
    assert_mean_close(out, P0, se=se)
    np.testing.assert_allclose(out.var(axis=0), P0 * (1 - P0) / m, rtol=0.1)


def test_discrete_loss_probability_matches_exact():
    m, g, r = 10, 25, 4000
    out = simulate.discrete_chain(P0, m, g, n_runs=r, seed=5)
    lost = (out == 0).astype(float)  # (runs, generations, K)
    exact = theory.discrete_loss_probability(P0, m, g).T  # (generations, K)
    se = np.sqrt(np.maximum(exact * (1 - exact), 1e-12) / r)
    assert_mean_close(lost, exact, se=se)


def test_discrete_absorption_states_and_two_state_time():
    r = 6000
    times, states = simulate.discrete_absorption(P0, 12, n_runs=r, seed=6)
    assert times.min() >= 1 and np.all(states >= 0)
    counts = np.bincount(states, minlength=P0.size)
    chi2 = ((counts - r * P0) ** 2 / (r * P0)).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-5, df=P0.size - 1)
    times2, _ = simulate.discrete_absorption([0.3, 0.7], 25, n_runs=r, seed=7)
    assert_mean_close(times2, theory.discrete_absorption_time_two_states(0.3, 25))


def test_discrete_absorption_edge_cases():
    times, states = simulate.discrete_absorption([0.0, 1.0], 5, n_runs=3)
    np.testing.assert_array_equal(times, 0)
    np.testing.assert_array_equal(states, 1)
    times, states = simulate.discrete_absorption(np.full(10, 0.1), 1000, n_runs=4, max_generations=2)
    np.testing.assert_array_equal(times, -1)
    np.testing.assert_array_equal(states, -1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(p0=[0.5, 0.6]), "sum to 1"),
    (dict(p0=[1.5, -0.5]), "non-negative"),
    (dict(p0=[[0.5, 0.5]]), "1-D"),
    (dict(n_samples=0), "n_samples"),
    (dict(n_generations=-3), "n_generations"),
    (dict(n_runs=0), "n_runs"),
    (dict(seed=-1), "seed"),
    (dict(n_samples=2.5), "n_samples"),
])
def test_discrete_validation(kwargs, match):
    args = dict(p0=P0, n_samples=10, n_generations=3, n_runs=2, seed=0) | kwargs
    with pytest.raises(ParameterError, match=match):
        simulate.discrete_chain(**args)


# ------------------------------------------------------------------ Gaussian

COV2 = np.array([[2.0, 0.5], [0.5, 1.0]])


@pytest.mark.parametrize("policy", ["replace", "accumulate", "accumulate-subsample", Policy("replace", 0.25)])
def test_gaussian_shapes_generation0_determinism(policy):
    means, covs = simulate.gaussian_chain([1.0, -1.0], COV2, 8, 6, n_runs=4, seed=1, policy=policy)
    assert means.shape == (4, 7, 2) and covs.shape == (4, 7, 2, 2)
    np.testing.assert_array_equal(means[:, 0], np.broadcast_to([1.0, -1.0], (4, 2)))
    np.testing.assert_array_equal(covs[:, 0], np.broadcast_to(COV2, (4, 2, 2)))
    np.testing.assert_allclose(covs, np.swapaxes(covs, -1, -2), atol=1e-12)
    assert np.all(np.linalg.eigvalsh(covs) > 0)
    again = simulate.gaussian_chain([1.0, -1.0], COV2, 8, 6, n_runs=4, seed=1, policy=policy)
    np.testing.assert_array_equal(means, again[0])
    np.testing.assert_array_equal(covs, again[1])
    other = simulate.gaussian_chain([1.0, -1.0], COV2, 8, 6, n_runs=4, seed=2, policy=policy)
    assert not np.array_equal(means, other[0])


def test_gaussian_scalar_inputs_and_zero_generations():
    means, covs = simulate.gaussian_chain(0.0, 2.0, 5, 0, n_runs=3)
    assert means.shape == (3, 1, 1) and covs.shape == (3, 1, 1, 1)
    assert covs[0, 0, 0, 0] == 2.0


@pytest.mark.parametrize("ddof", [0, 1])
def test_gaussian_replace_1d_moments(ddof):
    m, g, r = 20, 12, 20000
    means, covs = simulate.gaussian_chain(0.0, 1.0, m, g, n_runs=r, seed=10 + ddof, ddof=ddof)
    var = covs[:, 1:, 0, 0]
    # E σ_n² and its exact standard error
    se = theory.gaussian_variance_sd(m, g, ddof)[1:] / np.sqrt(r)
    assert_mean_close(var, theory.gaussian_variance_factor(m, g, ddof)[1:], se=se)
    # E log σ_n²: digamma drift, exact standard error
    se = theory.gaussian_log_det_sd(m, g)[1:] / np.sqrt(r)
    assert_mean_close(np.log(var), theory.gaussian_log_det_mean(m, g, ddof=ddof)[1:], se=se)
    # E (μ_n - μ_0)²
    assert_mean_close(means[:, 1:, 0] ** 2, theory.gaussian_mean_sq_drift(m, g, ddof=ddof)[1:])
    # one step: the fitted variance is σ² χ²_{M-1}/(M - ddof)
    ks = stats.kstest(var[:, 0] * (m - ddof), stats.chi2(m - 1).cdf)
    assert ks.pvalue > 1e-4


@pytest.mark.parametrize("ddof", [0, 1])
def test_gaussian_replace_multid_moments(ddof):
    m, g, r = 15, 8, 20000
    mu0 = np.array([1.0, 2.0])
    means, covs = simulate.gaussian_chain(mu0, COV2, m, g, n_runs=r, seed=20 + ddof, ddof=ddof)
    factor = theory.gaussian_variance_factor(m, g, ddof)
    assert_mean_close(covs[:, g].reshape(r, 4), (factor[g] * COV2).ravel())
    logdet = np.linalg.slogdet(covs[:, 1:])[1]
    expected = theory.gaussian_log_det_mean(m, g, np.linalg.slogdet(COV2)[1], dim=2, ddof=ddof)[1:]
    assert_mean_close(logdet, expected, se=theory.gaussian_log_det_sd(m, g, dim=2)[1:] / np.sqrt(r))
    drift = ((means[:, 1:] - mu0) ** 2).sum(axis=-1)
    assert_mean_close(drift, theory.gaussian_mean_sq_drift(m, g, np.trace(COV2), ddof)[1:])
    # one step: the scatter matrix is Wishart(M - 1, Σ)
    scatter = covs[:, 1] * (m - ddof)
    np.testing.assert_allclose(np.var(scatter[:, 0, 1]), (m - 1) * (COV2[0, 1] ** 2 + COV2[0, 0] * COV2[1, 1]),
                               rtol=0.05)


@pytest.mark.parametrize("ddof", [0, 1])
def test_gaussian_accumulate_matches_exact_recursion(ddof):
    m, g, r = 10, 25, 20000
    means, covs = simulate.gaussian_chain(0.0, 1.0, m, g, n_runs=r, seed=30 + ddof, policy="accumulate", ddof=ddof)
    assert_mean_close(covs[:, 1:, 0, 0], theory.gaussian_variance_factor(m, g, ddof, "accumulate")[1:])
    assert_mean_close(means[:, 1:, 0] ** 2, theory.gaussian_mean_sq_drift(m, g, 1.0, ddof, "accumulate")[1:])


def _naive_gaussian(policy, m, g, runs, seed, ddof=1, real_fraction=0.0):
    """Per-run loop on actual samples, through mcutils.generational (the reference)."""
    rng = np.random.default_rng(seed)
    pol = Policy(policy, real_fraction)
    out_var, out_mean = np.empty((runs, g + 1)), np.empty((runs, g + 1))
    for run in range(runs):
        real = rng.standard_normal((m, 1))
        fit = lambda data, _rng: (data.mean(axis=0), data.var(axis=0, ddof=ddof))  # noqa: E731
        sample = lambda model, n, r_: model[0] + np.sqrt(model[1]) * r_.standard_normal((n, 1))  # noqa: E731
        out_mean[run, 0], out_var[run, 0] = 0.0, 1.0
        for gen in generational_loop(real, fit, sample, g - 1, pol, seed=rng):
            out_mean[run, gen.index + 1], out_var[run, gen.index + 1] = gen.model[0][0], gen.model[1][0]
    return out_mean, out_var


@pytest.mark.parametrize("policy, real_fraction", [("accumulate-subsample", 0.0), ("replace", 0.3),
                                                   ("accumulate", 0.0)])
@pytest.mark.parametrize("ddof", [0, 1])
def test_gaussian_policies_match_naive_loop(policy, real_fraction, ddof):
    m, g = 6, 8
    naive_mean, naive_var = _naive_gaussian(policy, m, g, 1500, seed=40 + ddof, ddof=ddof,
                                            real_fraction=real_fraction)
    means, covs = simulate.gaussian_chain(0.0, 1.0, m, g, n_runs=20000, seed=50 + ddof,
                                          policy=Policy(policy, real_fraction), ddof=ddof)
    assert_same_mean(covs[:, 1:, 0, 0], naive_var[:, 1:])
    assert_same_mean(np.log(covs[:, 1:, 0, 0]), np.log(naive_var[:, 1:]))
    assert_same_mean(means[:, 1:, 0] ** 2, naive_mean[:, 1:] ** 2)


def test_gaussian_subsample_first_step_equals_replace():
    """Generation 1 is fitted on X^0 alone under every policy: the same law."""
    m, r = 12, 20000
    _, sub = simulate.gaussian_chain(0.0, 1.0, m, 1, n_runs=r, seed=60, policy="accumulate-subsample")
    _, rep = simulate.gaussian_chain(0.0, 1.0, m, 1, n_runs=r, seed=61)
    assert stats.ks_2samp(sub[:, 1, 0, 0], rep[:, 1, 0, 0]).pvalue > 1e-4


def test_subsample_indices_are_distinct_and_uniform():
    rng = np.random.default_rng(0)
    for population, size in [(20, 5), (40, 20), (9, 8), (7, 7)]:
        idx = simulate._subsample_indices(rng, 20000, population, size)
        s = np.sort(idx, axis=1)
        assert np.all(s[:, 1:] > s[:, :-1]) and s.min() >= 0 and s.max() < population
        counts = np.bincount(idx.ravel(), minlength=population)
        expected = 20000 * size / population
        if size < population:
            # each index is included with probability size/population (SE from the hypergeometric)
            se = np.sqrt(20000 * size / population * (1 - size / population))
            assert np.all(np.abs(counts - expected) <= Z * se)
    # pairs: P(both i and j) = s(s-1)/(N(N-1)) for a uniform s-subset
    idx = simulate._subsample_indices(rng, 40000, 10, 3)
    both = ((idx == 0).any(axis=1) & (idx == 1).any(axis=1)).mean()
    p = 3 * 2 / (10 * 9)
    assert abs(both - p) <= Z * np.sqrt(p * (1 - p) / 40000)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cov=np.array([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
    (dict(cov=np.array([[1.0, 0.1], [0.0, 1.0]])), "symmetric"),
    (dict(cov=np.eye(3)), r"\(2, 2\)"),
    (dict(mean=[0.0, np.nan]), "finite"),
    (dict(n_samples=2), "d \\+ 1"),
    (dict(n_generations=-3), "n_generations"),
    (dict(n_runs=0), "n_runs"),
    (dict(ddof=2), "ddof"),
    (dict(policy="bogus"), "policy"),
    (dict(policy=None), "policy"),
    (dict(seed=-1), "seed"),
])
def test_gaussian_validation(kwargs, match):
    args = dict(mean=[0.0, 0.0], cov=np.eye(2), n_samples=5, n_generations=3, n_runs=2) | kwargs
    with pytest.raises(ParameterError, match=match):
        simulate.gaussian_chain(**args)


def test_gaussian_subsample_memory_cap():
    with pytest.raises(ParameterError, match="keeps every sample"):
        simulate.gaussian_chain(0.0, 1.0, 10_000, 10_000, n_runs=100, policy="accumulate-subsample")


# --------------------------------------------------------- linear regression

@pytest.mark.parametrize("policy", ["replace", "accumulate", "accumulate-subsample", "replace-grown"])
def test_regression_shape_and_determinism(policy):
    out = simulate.linear_regression_chain(3, 10, 0.5, 4, n_runs=6, seed=1, policy=policy)
    assert out.shape == (6, 5) and np.all(out >= 0)  # generation 0 and 4 refits
    np.testing.assert_array_equal(out, simulate.linear_regression_chain(3, 10, 0.5, 4, n_runs=6, seed=1, policy=policy))
    assert simulate.linear_regression_chain(3, 10, 0.0, 4, n_runs=2, policy=policy).max() == 0.0


@pytest.mark.parametrize("policy", ["replace", "accumulate", "replace-grown"])
def test_regression_matches_closed_form(policy):
    d, t, noise, g, r = 5, 20, 2.0, 12, 20000
    out = simulate.linear_regression_chain(d, t, noise, g, n_runs=r, seed=2, policy=policy)
    assert_mean_close(out, theory.linear_regression_error(d, t, noise, g, policy))


def _naive_regression(policy, d, t, noise, g, runs, seed):
    """Draw X, w*, labels; refit with lstsq each iteration (the reference); ``g`` refits after the first fit."""
    rng = np.random.default_rng(seed)
    errors = np.empty((runs, g + 1))
    for run in range(runs):
        x = rng.standard_normal((t, d))
        w_star = rng.standard_normal(d)
        real = x @ w_star + np.sqrt(noise) * rng.standard_normal(t)
        rows = np.column_stack([x, real])
        fit = lambda data, _rng: np.linalg.lstsq(data[:, :d], data[:, d], rcond=None)[0]  # noqa: E731
        sample = lambda w, n, r_: np.column_stack([x, x @ w + np.sqrt(noise) * r_.standard_normal(t)])  # noqa: E731
        for gen in generational_loop(rows, fit, sample, g, policy, seed=rng):
            errors[run, gen.index] = np.sum((gen.model - w_star) ** 2)
    return errors


@pytest.mark.parametrize("policy", ["replace", "accumulate", "accumulate-subsample"])
def test_regression_matches_naive_loop(policy):
    d, t, noise, g = 3, 8, 1.0, 5
    naive = _naive_regression(policy, d, t, noise, g, 1500, seed=3)
    fast = simulate.linear_regression_chain(d, t, noise, g, n_runs=20000, seed=4, policy=policy)
    assert_same_mean(fast, naive)


def _naive_grown_regression(d, t, noise, g, runs, seed):
    """replace-grown the slow way: model i refits lstsq on X stacked i + 1 times, each copy
    labelled by the previous fit plus its own fresh noise (no real or older label kept)."""
    rng = np.random.default_rng(seed)
    errors = np.empty((runs, g + 1))
    for run in range(runs):
        x = rng.standard_normal((t, d))
        w_star = rng.standard_normal(d)
        w = np.linalg.lstsq(x, x @ w_star + np.sqrt(noise) * rng.standard_normal(t), rcond=None)[0]
        errors[run, 0] = np.sum((w - w_star) ** 2)
        for i in range(1, g + 1):
            stacked = np.tile(x, (i + 1, 1))
            labels = stacked @ w + np.sqrt(noise) * rng.standard_normal((i + 1) * t)
            w = np.linalg.lstsq(stacked, labels, rcond=None)[0]
            errors[run, i] = np.sum((w - w_star) ** 2)
    return errors


def test_replace_grown_fast_sampler_matches_the_relabel_and_refit_loop():
    d, t, noise, g = 3, 8, 1.0, 5
    naive = _naive_grown_regression(d, t, noise, g, 1500, seed=5)
    fast = simulate.linear_regression_chain(d, t, noise, g, n_runs=20000, seed=6, policy="replace-grown")
    assert_same_mean(fast, naive)
    # and both match the closed form c·H_{i+1}, which at these sizes is far from replace's c·(i + 1)
    assert_mean_close(naive, theory.linear_regression_error(d, t, noise, g, "replace-grown"))


def test_replace_grown_lies_between_accumulate_and_replace_from_the_second_model_on():
    d, t, noise, g, r = 4, 30, 1.0, 30, 20000
    means = {policy: simulate.linear_regression_chain(d, t, noise, g, n_runs=r, seed=[7, k], policy=policy).mean(axis=0)
             for k, policy in enumerate(["replace", "accumulate", "replace-grown"])}
    assert np.all(means["accumulate"][2:] < means["replace-grown"][2:])
    assert np.all(means["replace-grown"][2:] < means["replace"][2:])


@pytest.mark.parametrize("kwargs, match", [
    (dict(dim=0), "dim"),
    (dict(n_samples=2), "n_samples"),
    (dict(noise_var=-1.0), "noise_var"),
    (dict(n_generations=-1), "n_generations"),
    (dict(policy="keep"), "policy"),
    (dict(policy=Policy("replace", 0.1)), "real_fraction"),
])
def test_regression_validation(kwargs, match):
    args = dict(dim=3, n_samples=10, noise_var=1.0, n_generations=3, n_runs=2) | kwargs
    with pytest.raises(ParameterError, match=match):
        simulate.linear_regression_chain(**args)


def test_a_seed_may_be_a_stream_key_and_streams_do_not_collide():
    """The book's seeding convention: seed=[seed, STREAM, k], not seed arithmetic."""
    a = simulate.discrete_chain([0.5, 0.5], 20, 5, n_runs=50, seed=[0, 1, 2])
    np.testing.assert_array_equal(a, simulate.discrete_chain([0.5, 0.5], 20, 5, n_runs=50, seed=(0, 1, 2)))
    # seed + 1000 * k arithmetic makes (seed=1000, k=0) and (seed=0, k=1) the same stream; keys never do
    assert not np.array_equal(simulate.discrete_chain([0.5, 0.5], 20, 5, n_runs=50, seed=[1000, 1, 0]),
                              simulate.discrete_chain([0.5, 0.5], 20, 5, n_runs=50, seed=[0, 1, 1]))
    with pytest.raises(ParameterError, match=r"seed\[1\]"):
        simulate.discrete_chain([0.5, 0.5], 20, 5, seed=[0, -1])
