"""Tests of mcutils.theory against independent computations and hand-worked cases.

The closed forms are also checked against the simulations in
``test_simulate.py``; here each is checked against something computed
another way (numerical integration, a Markov-chain solve, a matrix square
root, small cases worked by hand).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, stats

from mcutils import theory
from mcutils.results import Z
from mcutils.validate import ParameterError

P0 = np.array([0.5, 0.3, 0.15, 0.05])


# ------------------------------------------------------------------ discrete

def test_diversity_start_and_ratio():
    h = theory.discrete_diversity(P0, 10, 5)
    assert h[0] == pytest.approx(1 - np.sum(P0**2))
    np.testing.assert_allclose(h[1:] / h[:-1], 0.9)
    assert theory.discrete_diversity([1.0, 0.0], 10, 3).max() == 0.0


def test_diversity_one_step_by_enumeration():
    """E[1 - Σ p₁²] summed over every outcome of M = 3 draws from three categories."""
    p, m = np.array([0.6, 0.3, 0.1]), 3
    expected = 0.0
    for a in range(m + 1):
        for b in range(m + 1 - a):
            counts = np.array([a, b, m - a - b])
            expected += stats.multinomial.pmf(counts, m, p) * (1 - np.sum((counts / m) ** 2))
    assert theory.discrete_diversity(p, m, 1)[1] == pytest.approx(expected)


def test_absorption_probabilities_and_first_step_loss():
    np.testing.assert_array_equal(theory.discrete_absorption_probabilities(P0), P0)
    np.testing.assert_allclose(theory.discrete_loss_first_step(P0, 20), (1 - P0) ** 20)


def test_transition_matrix_rows_and_absorbing_ends():
    t = theory.binomial_transition_matrix(12)
    np.testing.assert_allclose(t.sum(axis=1), 1.0)
    assert t[0, 0] == 1.0 and t[12, 12] == 1.0
    # the count is a martingale: E[b | a] = a
    np.testing.assert_allclose(t @ np.arange(13), np.arange(13))


def test_loss_probability_first_step_monotone_and_limit():
    q = np.array([0.05, 0.2, 0.5])
    loss = theory.discrete_loss_probability(q, 8, 400)
    np.testing.assert_allclose(loss[:, 1], (1 - q) ** 8)
    assert np.all(np.diff(loss, axis=1) >= -1e-15)
    # eventually lost unless absorbed in it: probability 1 - q
    np.testing.assert_allclose(loss[:, -1], 1 - q, atol=1e-9)
    assert theory.discrete_loss_probability([0.3], 5, 0).shape == (1, 1)


def test_two_state_absorption_time_small_cases():
    assert theory.discrete_absorption_time_two_states(0.5, 1) == pytest.approx(1.0)
    # M = 2 from (1/2, 1/2): absorbed each step with probability 1/2, so the mean is 2
    assert theory.discrete_absorption_time_two_states(0.5, 2) == pytest.approx(2.0)
    assert theory.discrete_absorption_time_two_states(0.0, 7) == 0.0


@pytest.mark.parametrize("m", [10, 30, 100, 300, 1000])
@pytest.mark.parametrize("q", [0.05, 0.2, 0.5])
def test_diffusion_time_accuracy(m, q):
    """The diffusion approximation is within (1 + ln M)/M of the exact two-state mean."""
    exact = theory.discrete_absorption_time_two_states(q, m)
    approx = theory.discrete_absorption_time_diffusion([q, 1 - q], m)
    assert abs(approx / exact - 1) <= (1 + np.log(m)) / m
    assert approx >= exact  # it overestimates (misses the discreteness near the boundary)


def test_diffusion_time_k_states_formula():
    p = np.full(4, 0.25)
    assert theory.discrete_absorption_time_diffusion(p, 50) == pytest.approx(-2 * 50 * 4 * 0.75 * np.log(0.75))
    assert theory.discrete_absorption_time_diffusion([1.0, 0.0], 50) == 0.0


# ------------------------------------------------------------------ Gaussian

def e_log_chi2(nu):
    return stats.chi2(nu).expect(np.log)


@pytest.mark.parametrize("ddof", [0, 1])
def test_variance_factor_replace(ddof):
    v = theory.gaussian_variance_factor(10, 4, ddof)
    np.testing.assert_allclose(v, ((9 / (10 - ddof)) ** np.arange(5)))


@pytest.mark.parametrize("ddof", [0, 1])
def test_variance_factor_accumulate_first_steps(ddof):
    m = 10
    v = theory.gaussian_variance_factor(m, 3, ddof, "accumulate")
    assert v[1] == pytest.approx((m - 1) / (m - ddof))  # X^0 alone
    # generation 2 by hand: scatter of 2M points = within (M-1)(v0 + v1) + between (1/2) v1
    assert v[2] == pytest.approx(((m - 1) * (v[0] + v[1]) + 0.5 * v[1]) / (2 * m - ddof))


def test_variance_sd_matches_numerical_moments():
    m, ddof, n = 8, 1, 3
    second = stats.chi2(m - 1).expect(lambda x: (x / (m - ddof)) ** 2) ** n
    first = (stats.chi2(m - 1).mean() / (m - ddof)) ** n
    assert theory.gaussian_variance_sd(m, n, ddof)[-1] == pytest.approx(np.sqrt(second - first**2), rel=1e-6)


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("ddof", [0, 1])
def test_log_det_drift_by_integration(dim, ddof):
    m = 12
    expected = sum(e_log_chi2(m - 1 - k) for k in range(dim)) - dim * np.log(m - ddof)
    assert theory.gaussian_log_det_drift(m, dim, ddof) == pytest.approx(expected, rel=1e-7)
    mean = theory.gaussian_log_det_mean(m, 5, 1.5, dim, ddof)
    np.testing.assert_allclose(mean, 1.5 + expected * np.arange(6), rtol=1e-7)


def test_log_det_sd_by_integration():
    m = 9
    var1 = stats.chi2(m - 1).expect(lambda x: np.log(x) ** 2) - e_log_chi2(m - 1) ** 2
    assert theory.gaussian_log_det_sd(m, 4)[-1] == pytest.approx(np.sqrt(4 * var1), rel=1e-6)


def test_mean_sq_drift_forms():
    np.testing.assert_allclose(theory.gaussian_mean_sq_drift(20, 6, 2.0, 1), 2.0 * np.arange(7) / 20)
    np.testing.assert_allclose(theory.gaussian_mean_sq_drift(20, 6, 2.0, 0), 2.0 * (1 - 0.95 ** np.arange(7)))
    acc = theory.gaussian_mean_sq_drift(20, 2000, 1.0, 1, "accumulate")
    assert acc[1] == pytest.approx(1 / 20)
    assert acc[-1] < np.pi**2 / 6 / 20 and np.all(np.diff(acc) > 0)


def test_std_factor_is_mean_of_chi():
    m, ddof = 7, 1
    c = stats.chi(m - 1).mean() / np.sqrt(m - ddof)
    np.testing.assert_allclose(theory.gaussian_std_factor(m, 3, ddof), c ** np.arange(4))


def test_expected_w2_sq_1d_composition_and_growth():
    m, g = 50, 400
    w = theory.gaussian_expected_w2_sq(m, g, 2.0, 1)
    assert w[0] == pytest.approx(0.0)
    c = theory.gaussian_std_factor(m, g, 1)
    np.testing.assert_allclose(w, 2.0 * np.arange(g + 1) / m + 2.0 * 2 * (1 - c))
    assert np.all(np.diff(w) > 0)
    low, high = theory.gaussian_w2_sq_bounds(m, g, 2.0, 1)
    assert np.all(low <= w + 1e-12) and np.all(w <= high + 1e-12)
    # maximum likelihood: bounded by 2 σ_0²
    assert theory.gaussian_expected_w2_sq(m, 5000, 2.0, 0)[-1] < 2 * 2.0


def test_w2_sq_bracket_is_exact_in_one_dimension_and_holds_a_direct_simulation():
    m, g = 12, 6
    low, high = theory.gaussian_w2_sq_bracket(m, g, 1, 2.0)
    np.testing.assert_allclose(low, theory.gaussian_expected_w2_sq(m, g, 2.0))
    np.testing.assert_allclose(high, low)
    for ddof in (0, 1):
        low, high = theory.gaussian_w2_sq_bracket(m, g, 3, 1.5, ddof)
        assert low[0] == pytest.approx(0.0, abs=1e-12) and high[0] == pytest.approx(0.0, abs=1e-12)
        assert np.all(low[1:] < high[1:])
    # draw and refit actual samples of a correlated 2-D Gaussian (no sufficient statistics)
    rng = np.random.default_rng(11)
    cov0 = np.array([[1.0, 0.6], [0.6, 2.0]])
    runs, m, g = 4000, 8, 4
    mu, cov = np.zeros((runs, 2)), np.broadcast_to(cov0, (runs, 2, 2)).copy()
    w2, marginal = [], []
    for _ in range(g):
        x = mu[:, None, :] + rng.standard_normal((runs, m, 2)) @ np.swapaxes(np.linalg.cholesky(cov), -1, -2)
        mu = x.mean(axis=1)
        centred = x - mu[:, None, :]
        cov = np.swapaxes(centred, -1, -2) @ centred / (m - 1)
        w2.append(theory.gaussian_w2(mu, cov, np.zeros(2), cov0) ** 2)
        marginal.append(mu ** 2 + (np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1)) - np.sqrt(np.diag(cov0))) ** 2)
    w2, marginal = np.array(w2).T, np.array(marginal).transpose(1, 0, 2)  # runs × g (× d)
    low, high = theory.gaussian_w2_sq_bracket(m, g, 2, np.trace(cov0))
    se = w2.std(axis=0, ddof=1) / np.sqrt(runs)
    assert np.all(low[1:] - Z * se <= w2.mean(axis=0)) and np.all(w2.mean(axis=0) <= high[1:] + Z * se)
    exact = np.diag(cov0) * theory.gaussian_expected_w2_sq(m, g)[1:, None]  # each coordinate is the 1-D chain
    z = np.abs(marginal.mean(axis=0) - exact) / (marginal.std(axis=0, ddof=1) / np.sqrt(runs))
    assert z.max() <= Z, z
    assert np.all(w2 >= marginal.sum(axis=-1) - 1e-9)  # W2² of the joint >= the sum over its marginals


def test_w2_against_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 3))
    c1, c2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    m1, m2 = rng.standard_normal((2, 3))
    root = linalg.sqrtm(c2)
    expected = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(root @ c1 @ root)).real
    assert theory.gaussian_w2(m1, c1, m2, c2) == pytest.approx(np.sqrt(expected), rel=1e-8)
    assert theory.gaussian_w2(m2, c2, m1, c1) == pytest.approx(np.sqrt(expected), rel=1e-8)
    assert theory.gaussian_w2(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-6)


def test_w2_1d_and_batching():
    means = np.array([[0.0], [1.0], [3.0]])
    covs = np.array([[[1.0]], [[4.0]], [[0.25]]])
    w = theory.gaussian_w2(means, covs, np.zeros(1), np.eye(1))
    np.testing.assert_allclose(w, np.sqrt([0.0, 1 + 1, 9 + 0.25]))
    assert theory.gaussian_w2(np.zeros((5, 7, 2)), np.broadcast_to(np.eye(2), (5, 7, 2, 2)),
                              np.zeros(2), np.eye(2)).shape == (5, 7)


def test_reference_helper_log_chi2():
    """The integration helper used above agrees with the textbook mean of ln χ²_ν."""
    from scipy.special import digamma
    assert e_log_chi2(5) == pytest.approx(digamma(2.5) + np.log(2), rel=1e-7)


# --------------------------------------------------------- linear regression

def test_regression_closed_forms():
    c = 1.5 * 4 / (30 - 4 - 1)
    np.testing.assert_allclose(theory.linear_regression_error(4, 30, 1.5, 4, "replace"), c * np.arange(1, 6))
    acc = theory.linear_regression_error(4, 30, 1.5, 4, "accumulate")
    np.testing.assert_allclose(acc, c * np.cumsum(1 / np.arange(1, 6) ** 2))
    limit = theory.linear_regression_accumulate_limit(4, 30, 1.5)
    assert limit == pytest.approx(c * np.pi**2 / 6)
    assert theory.linear_regression_error(4, 30, 1.5, 10_000, "accumulate")[-1] < limit


def test_replace_grown_closed_form_is_c_times_the_harmonic_numbers_and_grows_like_log_n():
    c = 1.5 * 4 / (30 - 4 - 1)
    grown = theory.linear_regression_error(4, 30, 1.5, 999, "replace-grown")
    n = np.arange(1, 1001)
    np.testing.assert_allclose(grown[:5], c * np.array([1, 3 / 2, 11 / 6, 25 / 12, 137 / 60]))
    # H_n - ln n - γ lies in (0, 1/(2n)]
    gap = grown / c - np.log(n) - np.euler_gamma
    assert np.all(gap > 0) and np.all(gap <= 1 / (2 * n) + 1e-12)
    assert grown[-1] < theory.linear_regression_error(4, 30, 1.5, 999, "replace")[-1] / 100


def test_inverse_wishart_trace_mean_used_by_regression():
    """E tr (XᵀX)⁻¹ = d/(T - d - 1) for Gaussian X, checked by simulation."""
    rng = np.random.default_rng(1)
    d, t, r = 3, 12, 20000
    x = rng.standard_normal((r, t, d))
    tr = np.trace(np.linalg.inv(np.swapaxes(x, 1, 2) @ x), axis1=1, axis2=2)
    assert abs(tr.mean() - d / (t - d - 1)) <= Z * tr.std() / np.sqrt(r)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("call, match", [
    (lambda: theory.discrete_diversity([0.5, 0.6], 10, 3), "sum"),
    (lambda: theory.discrete_diversity(P0, 0, 3), "n_samples"),
    (lambda: theory.discrete_diversity(P0, 10, -3), "n_generations"),
    (lambda: theory.discrete_loss_probability([1.5], 10, 3), "q"),
    (lambda: theory.gaussian_variance_factor(10, 3, 2), "ddof"),
    (lambda: theory.gaussian_variance_factor(10, 3, 1, "subsample"), "policy"),
    (lambda: theory.gaussian_log_det_drift(3, dim=3), "dim"),
    (lambda: theory.gaussian_expected_w2_sq(10, 3, var0=0.0), "var0"),
    (lambda: theory.linear_regression_error(5, 6, 1.0, 3), "n_samples"),
    (lambda: theory.linear_regression_error(5, 20, -1.0, 3), "noise_var"),
    (lambda: theory.linear_regression_error(5, 20, 1.0, 3, "accumulate-subsample"), "policy"),
    (lambda: theory.gaussian_w2(np.zeros(2), np.eye(3), np.zeros(2), np.eye(3)), "gaussian_w2"),
])
def test_theory_validation(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_binomial_pmf_matches_scipy():
    k = np.arange(13)
    for p in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(theory._binom_pmf(k, 12, p), stats.binom.pmf(k, 12, p), atol=1e-15)
