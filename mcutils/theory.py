"""Closed forms for the chains of :mod:`mcutils.simulate`, drawn over the simulations.

Indexing follows :mod:`mcutils.simulate`: generation 0 is the starting
distribution (``p0``, or the true Gaussian), generation ``n`` the ``n``-th
refit; ``M`` is the number of samples per generation.  Every function
returns numpy arrays indexed by generation where that makes sense.

Discrete chain (Shumailov et al. §3.1)
    ``E[1 - Σ p_t²] = (1 - 1/M)^t (1 - Σ p_0²)``; a category is absorbed with
    probability equal to its initial probability; exact loss probabilities
    of one category from its own two-state (binomial) chain; the diffusion
    (Wright-Fisher) approximation of the mean time to absorption.
Gaussian chain (Shumailov et al. §3.2, Theorem 3.1)
    exact moments under ``replace`` (mean of the fitted covariance, drift and
    spread of ``log det Σ_n``, mean-square drift of the mean, the expected
    squared W2 distance in 1-D, and bounds in d dimensions) and the exact
    expected covariance and mean drift under ``accumulate``.
Linear regression (Gerstgrasser et al.'s analysis, after Dohmatob et al.)
    the expected squared parameter error under replace, accumulate and the
    grown-synthetic control (replace-grown).

The chapters label these formulas as equations ``eq-...`` (book/01_theory, book/02_discrete_chain,
book/03_gaussian); each function's docstring names the equation it computes.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from . import validate


def _binom_pmf(k, n: int, p):
    """Binomial(n, p) probability of k, broadcasting (scipy.stats left out: it is slow to import)."""
    k, p = np.asarray(k, dtype=float), np.asarray(p, dtype=float)
    log_pmf = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
               + special.xlogy(k, p) + special.xlog1py(n - k, -p))
    return np.exp(log_pmf)


def _generations(n_generations: int) -> np.ndarray:
    return np.arange(validate.non_negative_int("n_generations", n_generations) + 1)


def _probabilities(p0) -> np.ndarray:
    p = np.asarray(p0, dtype=float)
    if p.ndim != 1 or np.any(p < 0) or not np.all(np.isfinite(p)) or abs(p.sum() - 1) > 1e-9:
        raise validate.ParameterError(f"p0 must be a 1-D array of probabilities summing to 1, got {p0!r}")
    return p


# ------------------------------------------------------------------ discrete

def discrete_diversity(p0, n_samples: int, n_generations: int) -> np.ndarray:
    """``E[1 - Σ_k p_t(k)²]`` for ``t = 0..n_generations`` (the Gini-Simpson diversity).

    One resampling step gives ``E[p_{t+1}(k)² | p_t] = p_t(k)² + p_t(k)(1 - p_t(k))/M``,
    hence ``E[1 - Σ p_{t+1}²] = (1 - 1/M) E[1 - Σ p_t²]``: the diversity
    (the chance that two draws differ) decays geometrically to 0, the value
    of a delta.

    Book: equation ``eq-discrete-diversity`` of book/02_discrete_chain.
    """
    p = _probabilities(p0)
    m = validate.positive_int("n_samples", n_samples)
    return (1 - 1 / m) ** _generations(n_generations) * (1 - np.sum(p**2))


def discrete_absorption_probabilities(p0) -> np.ndarray:
    """Probability that the chain ends in the delta at each category: ``p0`` itself.

    Each ``p_t(k)`` is a bounded martingale (``E[p_{t+1}(k) | p_t] = p_t(k)``)
    that ends at 0 or 1, so ``P(absorbed at k) = E p_∞(k) = p_0(k)``.

    Book: equation ``eq-discrete-absorption-probability`` of book/02_discrete_chain.
    """
    return _probabilities(p0).copy()


def discrete_loss_first_step(p0, n_samples: int) -> np.ndarray:
    """Probability that each category gets no draw in the first generation, ``(1 - p)^M``.

    A category with ``p <= 1/M`` expects fewer than one of the ``M`` draws
    (the paper's "tails disappear first").

    Book: summed over the categories, equation ``eq-discrete-first-loss`` of book/02_discrete_chain.
    """
    p = _probabilities(p0)
    return (1 - p) ** validate.positive_int("n_samples", n_samples)


def binomial_transition_matrix(n_samples: int) -> np.ndarray:
    """``P[a, b]`` = probability that a category with count ``a`` of ``M`` has count ``b`` next.

    A single category of the discrete chain against all others is itself a
    Markov chain (the lumped two-state chain): count ``b ~ Binomial(M, a/M)``.
    """
    m = validate.positive_int("n_samples", n_samples)
    a = np.arange(m + 1)
    return _binom_pmf(a[None, :], m, a[:, None] / m)


def discrete_loss_probability(q, n_samples: int, n_generations: int) -> np.ndarray:
    """Exact ``P(category with initial probability q has count 0 at generation t)``.

    Shape ``(len(q), n_generations + 1)`` (column 0 is 0 unless ``q = 0``).
    Propagates the count's distribution through the binomial chain of
    :func:`binomial_transition_matrix`; cost ``O(n_generations · M²)`` per
    value of ``q``, fine up to ``M`` of a few hundred.

    Book: at ``t = 1``, the terms of equation ``eq-discrete-first-loss`` of book/02_discrete_chain.
    """
    q = np.atleast_1d(np.asarray(q, dtype=float))
    if np.any((q < 0) | (q > 1)):
        raise validate.ParameterError(f"q must lie in [0, 1], got {q!r}")
    m = validate.positive_int("n_samples", n_samples)
    t = _generations(n_generations)
    out = np.zeros((q.size, t.size))
    out[:, 0] = (q == 0)
    if t.size == 1:
        return out
    transition = binomial_transition_matrix(m)
    dist = _binom_pmf(np.arange(m + 1)[None, :], m, q[:, None])  # counts after one step
    out[:, 1] = dist[:, 0]
    for step in range(2, t.size):
        dist = dist @ transition
        out[:, step] = dist[:, 0]
    return out


def discrete_absorption_time_diffusion(p0, n_samples: int) -> float:
    """Diffusion (Wright-Fisher) approximation of the mean number of generations to a delta.

    ``E[T] ≈ -2M Σ_k (1 - p_k) ln(1 - p_k)`` (Kimura and Ohta for two
    categories, ``-2M[p ln p + (1-p) ln(1-p)]``; Littler for ``K``).  It
    treats ``p_t`` as a diffusion with variance ``p(1 - p)/M`` per
    generation, so it is accurate to ``O(1)`` generations out of ``O(M)``:
    the relative error shrinks like ``1/M`` (see
    :func:`discrete_absorption_time_two_states` for an exact check).

    Book: equation ``eq-discrete-absorption-time`` of book/02_discrete_chain.
    """
    p = _probabilities(p0)
    m = validate.positive_int("n_samples", n_samples)
    rest = 1 - p
    terms = np.where(rest > 0, rest * np.log(np.where(rest > 0, rest, 1.0)), 0.0)
    return float(-2 * m * terms.sum())


def discrete_absorption_time_two_states(q: float, n_samples: int) -> float:
    """Exact mean time to absorption of a two-category chain started at ``(q, 1 - q)``.

    Solves ``(I - Q) τ = 1`` on the transient counts ``1..M-1`` of the
    binomial chain, then averages over the first step from ``q``.

    Book: the exact value that equation ``eq-discrete-absorption-time`` of
    book/02_discrete_chain approximates, for two categories.
    """
    q = validate.fraction("q", q)
    m = validate.positive_int("n_samples", n_samples)
    if q in (0.0, 1.0):
        return 0.0
    transition = binomial_transition_matrix(m)
    inner = transition[1:m, 1:m]
    tau = np.zeros(m + 1)
    tau[1:m] = np.linalg.solve(np.eye(m - 1) - inner, np.ones(m - 1))
    first = _binom_pmf(np.arange(m + 1), m, q)
    return float(1 + first @ tau)


# ------------------------------------------------------------------ Gaussian

def _check_gaussian_args(n_samples, ddof, dim=1):
    m = validate.positive_int("n_samples", n_samples)
    validate.choice("ddof", ddof, [0, 1])
    d = validate.positive_int("dim", dim)
    if m < d + 1:
        raise validate.ParameterError(f"n_samples must be >= dim + 1 = {d + 1}, got {m}")
    return m, d


def gaussian_variance_factor(n_samples: int, n_generations: int, ddof: int = 1,
                             policy: str = "replace") -> np.ndarray:
    """``v_n`` with ``E Σ_n = v_n Σ_0`` for ``n = 0..n_generations``.

    ``replace``: the scatter of ``M`` points has mean ``(M - 1) Σ_n``, so
    ``v_n = ((M - 1)/(M - ddof))^n``: 1 for the unbiased fit (``ddof=1``),
    ``(1 - 1/M)^n`` for maximum likelihood (``ddof=0``, geometric decay).

    ``accumulate``: write ``x̄_j = μ_j + e_j`` for batch ``j``'s mean.  The
    pooled mean moves by ``μ_{j+1} - μ_j = e_j/(j + 1)``, so ``x̄_j`` minus
    the pooled mean after batch ``i`` is ``e_j j/(j+1) - Σ_{k=j+1}^{i} e_k/(k+1)``.
    The ``e_k`` are uncorrelated with ``E e_k e_kᵀ = E Σ_k / M``, so the
    between-batch part of the pooled scatter has mean ``Σ_k k/(k+1) E Σ_k``
    and ``v_{i+1} = Σ_{k<=i} (M - 1 + k/(k+1)) v_k / ((i + 1) M - ddof)``,
    an exact recursion (the expected covariance shrinks slowly, by about
    ``(ln i)/(i M)`` a generation, for ``ddof=1``).

    Book: for ``ddof=0``, the first formula of equation ``eq-gaussian-ml`` of
    book/03_gaussian.
    """
    m, _ = _check_gaussian_args(n_samples, ddof)
    n = _generations(n_generations)
    validate.choice("policy", policy, ["replace", "accumulate"])
    if policy == "replace":
        return ((m - 1) / (m - ddof)) ** n
    v = np.empty(n.size)
    v[0] = 1.0
    weighted = 0.0
    for i in range(n.size - 1):
        weighted += (m - 1 + i / (i + 1)) * v[i]
        v[i + 1] = weighted / ((i + 1) * m - ddof)
    return v


def gaussian_variance_sd(n_samples: int, n_generations: int, ddof: int = 1) -> np.ndarray:
    """Standard deviation of ``σ_n² / σ_0²`` in 1-D under ``replace``.

    ``σ_n²/σ_0² = Π_k χ²_{M-1,k}/(M - ddof)`` (independent factors), so
    ``E σ_n⁴/σ_0⁴ = ((M - 1)(M + 1)/(M - ddof)²)^n`` and the variance is that
    minus ``v_n²``.  It grows like ``e^{2n/M}``: the mean of ``σ_n²`` is
    carried by ever rarer runs, which a finite simulation stops seeing once
    ``n`` is a few times ``M``.

    Book: equation ``eq-gaussian-variance-sd`` of book/03_gaussian.
    """
    m, _ = _check_gaussian_args(n_samples, ddof)
    n = _generations(n_generations)
    second = ((m - 1) * (m + 1) / (m - ddof) ** 2) ** n
    return np.sqrt(np.maximum(second - gaussian_variance_factor(m, n_generations, ddof) ** 2, 0.0))


def gaussian_log_det_drift(n_samples: int, dim: int = 1, ddof: int = 1) -> float:
    """Mean change of ``log det Σ`` per generation under ``replace`` (negative).

    ``det(scatter) = det Σ · Π_{k=0}^{d-1} χ²_{M-1-k}`` (Bartlett), and
    ``E ln χ²_ν = ψ(ν/2) + ln 2``, so the drift is
    ``Σ_{k=0}^{d-1} [ψ((M-1-k)/2) + ln 2] - d ln(M - ddof)``, about
    ``-d(d+1)/(2M)`` for ``ddof=1``.  In 1-D: ``E ln σ_n² = ln σ_0² + n·drift``.

    Book: equation ``eq-gaussian-log-det-drift`` of book/03_gaussian (in 1-D the bracket
    of ``eq-gaussian-log-variance`` there, and ``eq-theory-log-drift`` of book/01_theory).
    """
    m, d = _check_gaussian_args(n_samples, ddof, dim)
    k = np.arange(d)
    return float(np.sum(special.digamma((m - 1 - k) / 2) + np.log(2)) - d * np.log(m - ddof))


def gaussian_log_det_mean(n_samples: int, n_generations: int, log_det0: float = 0.0,
                          dim: int = 1, ddof: int = 1) -> np.ndarray:
    """``E log det Σ_n`` under ``replace``: a straight line to ``-∞`` (so ``Σ_n → 0`` a.s.).

    Book: equation ``eq-gaussian-log-variance`` of book/03_gaussian (1-D) with the drift
    of ``eq-gaussian-log-det-drift``.
    """
    return log_det0 + gaussian_log_det_drift(n_samples, dim, ddof) * _generations(n_generations)


def gaussian_log_det_sd(n_samples: int, n_generations: int, dim: int = 1) -> np.ndarray:
    """Standard deviation of ``log det Σ_n`` under ``replace``: ``sqrt(n Σ_k ψ'((M-1-k)/2))``.

    Independent of ``ddof`` (a constant shift).  The drift grows like ``n``
    and the spread like ``sqrt(n)``, which is why every run collapses.
    """
    m, d = _check_gaussian_args(n_samples, 1, dim)
    k = np.arange(d)
    return np.sqrt(_generations(n_generations) * np.sum(special.polygamma(1, (m - 1 - k) / 2)))


def gaussian_mean_sq_drift(n_samples: int, n_generations: int, trace_cov0: float = 1.0,
                           ddof: int = 1, policy: str = "replace") -> np.ndarray:
    """``E ‖μ_n - μ_0‖²`` for ``n = 0..n_generations``.

    ``replace``: ``μ_{n+1} = μ_n + e_n`` with ``E e_n e_nᵀ = E Σ_n / M``, so
    ``E‖μ_n - μ_0‖² = tr Σ_0/M · Σ_{k<n} v_k``; for ``ddof=1`` that is
    ``n tr Σ_0 / M``: the random walk of Theorem 3.1 (unbounded), and for
    ``ddof=0`` it is ``tr Σ_0 (1 - (1 - 1/M)^n)`` (bounded).

    ``accumulate``: ``μ_n - μ_0 = Σ_{k=1}^{n} e_{k-1}/k``, so
    ``E‖μ_n - μ_0‖² = tr Σ_0/M · Σ_{k=1}^{n} v_{k-1}/k²`` (bounded by about
    ``π²/6 · tr Σ_0/M``), with ``v`` from :func:`gaussian_variance_factor`.

    Book: equations ``eq-gaussian-mean-drift`` (``replace``, ``ddof=1``),
    ``eq-gaussian-ml`` (``ddof=0``) and ``eq-gaussian-accumulate-mean`` (``accumulate``)
    of book/03_gaussian.
    """
    validate.number("trace_cov0", trace_cov0, minimum=0.0)
    v = gaussian_variance_factor(n_samples, n_generations, ddof, policy)
    weights = np.ones(v.size - 1)
    if policy == "accumulate":
        weights = 1.0 / np.arange(1, v.size) ** 2
    return trace_cov0 / n_samples * np.concatenate([[0.0], np.cumsum(weights * v[:-1])])


def gaussian_std_factor(n_samples: int, n_generations: int, ddof: int = 1) -> np.ndarray:
    """``E σ_n / σ_0`` in 1-D under ``replace``: ``c^n``, ``c = E sqrt(χ²_{M-1}/(M - ddof))``.

    ``c = sqrt(2/(M - ddof)) Γ(M/2)/Γ((M-1)/2) < 1`` even for ``ddof=1``: the
    unbiased variance gives a biased (too small) standard deviation.

    Book: the ``c`` of equation ``eq-gaussian-w2`` of book/03_gaussian.
    """
    m, _ = _check_gaussian_args(n_samples, ddof)
    log_c = 0.5 * np.log(2 / (m - ddof)) + special.gammaln(m / 2) - special.gammaln((m - 1) / 2)
    return np.exp(log_c * _generations(n_generations))


def gaussian_expected_w2_sq(n_samples: int, n_generations: int, var0: float = 1.0,
                            ddof: int = 1) -> np.ndarray:
    """``E W2²(N(μ_0, σ_0²), N(μ_n, σ_n²))`` in 1-D under ``replace``, exactly.

    ``W2² = (μ_n - μ_0)² + (σ_n - σ_0)²``, so
    ``E W2² = E(μ_n - μ_0)² + σ_0² (1 + v_n - 2 c^n)``; for ``ddof=1`` this is
    ``n σ_0²/M + 2σ_0²(1 - c^n)``, which grows without bound (Theorem 3.1).

    Book: equation ``eq-gaussian-w2`` of book/03_gaussian.
    """
    var0 = validate.number("var0", var0, minimum=0.0, strict_minimum=True)
    drift = gaussian_mean_sq_drift(n_samples, n_generations, var0, ddof)
    v = gaussian_variance_factor(n_samples, n_generations, ddof)
    c_n = gaussian_std_factor(n_samples, n_generations, ddof)
    return drift + var0 * (1 + v - 2 * c_n)


def gaussian_w2_sq_bounds(n_samples: int, n_generations: int, trace_cov0: float = 1.0,
                          ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on ``E W2²`` in ``d`` dimensions under ``replace``.

    ``W2² = ‖Δμ‖² + tr Σ_0 + tr Σ_n - 2 tr (Σ_0^{1/2} Σ_n Σ_0^{1/2})^{1/2}`` and
    the last trace lies between 0 and ``(tr Σ_0 + tr Σ_n)/2`` (the covariance
    part is itself a squared W2 distance, hence >= 0), so
    ``E‖μ_n - μ_0‖² <= E W2² <= E‖μ_n - μ_0‖² + tr Σ_0 (1 + v_n)``.
    Both bounds grow like ``n tr Σ_0 / M`` for ``ddof=1``: the theorem's
    divergence, in any dimension.  They are far apart (the upper one adds
    ``2 tr Σ_0``); :func:`gaussian_w2_sq_bracket` is the narrow bracket that
    book/03_gaussian uses.
    """
    low = gaussian_mean_sq_drift(n_samples, n_generations, trace_cov0, ddof)
    return low, low + trace_cov0 * (1 + gaussian_variance_factor(n_samples, n_generations, ddof))


def gaussian_w2_sq_bracket(n_samples: int, n_generations: int, dim: int, trace_cov0: float = 1.0,
                           ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A narrow bracket on ``E W2²`` in ``dim`` dimensions under ``replace``; exact in 1-D.

    Lower: every coordinate of the chain (indeed every projection ``uᵀX``) is
    itself the 1-D chain, since its fitted mean and variance are the sample
    mean and variance of that coordinate; and ``W2²`` of two distributions is
    at least the sum of its marginals' ``W2²`` (a coupling of the joints
    couples the marginals).  So
    ``E W2² >= tr Σ_0 · f_n`` with ``f_n`` the 1-D ``E W2²`` from ``N(0, 1)``
    (:func:`gaussian_expected_w2_sq`).

    Upper: ``V_n = Σ_0^{-1/2} Σ_n Σ_0^{-1/2}`` is the chain started from the
    identity (the sample covariance is equivariant under linear maps), whose
    law is invariant under rotations, so ``E V_n^{1/2} = g_n I``.  The
    coupling ``Y - μ_n = Σ_0^{1/2} V_n^{1/2} Σ_0^{-1/2} (X - μ_0)`` gives
    ``E W2² <= E‖μ_n - μ_0‖² + tr Σ_0 (1 + v_n - 2 g_n)``, and by the
    arithmetic-geometric mean inequality on the eigenvalues
    ``g_n >= E det(V_n)^{1/(2d)} = h^n`` with
    ``h = Π_{k=0}^{d-1} E (χ²_{M-1-k}/(M - ddof))^{1/(2d)}`` (Bartlett: each
    generation multiplies ``det V`` by an independent such product).  So
    ``E W2² <= E‖μ_n - μ_0‖² + tr Σ_0 (1 + v_n - 2 h^n)``.

    For ``dim = 1``, ``h = c`` and both bounds equal the exact 1-D value.
    Book: equation ``eq-gaussian-w2-bracket`` of book/03_gaussian.
    """
    m, d = _check_gaussian_args(n_samples, ddof, dim)
    validate.number("trace_cov0", trace_cov0, minimum=0.0)
    low = trace_cov0 * gaussian_expected_w2_sq(m, n_generations, 1.0, ddof)
    a = 1.0 / (2 * d)
    k = np.arange(d)
    log_h = np.sum(a * np.log(2 / (m - ddof)) + special.gammaln((m - 1 - k) / 2 + a) - special.gammaln((m - 1 - k) / 2))
    h_n = np.exp(log_h * _generations(n_generations))
    drift = gaussian_mean_sq_drift(m, n_generations, trace_cov0, ddof)
    high = drift + trace_cov0 * (1 + gaussian_variance_factor(m, n_generations, ddof) - 2 * h_n)
    return low, high


def gaussian_w2(mean1, cov1, mean2, cov2) -> np.ndarray:
    """Wasserstein-2 distance between Gaussians, batched over leading axes.

    ``W2² = ‖μ₁ - μ₂‖² + tr Σ₁ + tr Σ₂ - 2 tr (Σ₂^{1/2} Σ₁ Σ₂^{1/2})^{1/2}``.
    ``mean`` arrays end in ``(d,)`` and ``cov`` arrays in ``(d, d)``; they
    broadcast against each other.  In 1-D this is
    ``sqrt((μ₁ - μ₂)² + (σ₁ - σ₂)²)``.
    """
    m1, m2 = np.asarray(mean1, float), np.asarray(mean2, float)
    c1, c2 = np.asarray(cov1, float), np.asarray(cov2, float)
    if c1.shape[-2:] != c2.shape[-2:] or m1.shape[-1] != c1.shape[-1] or m2.shape[-1] != c2.shape[-1]:
        raise validate.ParameterError("gaussian_w2: means must end in (d,) and covariances in (d, d)")
    w, v = np.linalg.eigh(c2)
    root2 = (v * np.sqrt(np.clip(w, 0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)
    inner = np.linalg.eigvalsh(root2 @ c1 @ root2)
    cross = np.sqrt(np.clip(inner, 0, None)).sum(axis=-1)
    w2_sq = (((m1 - m2) ** 2).sum(axis=-1) + np.trace(c1, axis1=-2, axis2=-1)
             + np.trace(c2, axis1=-2, axis2=-1) - 2 * cross)
    return np.sqrt(np.clip(w2_sq, 0, None))


# ---------------------------------------------------------- linear regression

def linear_regression_error(dim: int, n_samples: int, noise_var: float, n_generations: int,
                            policy: str = "replace") -> np.ndarray:
    """``E‖ŵ_i - w*‖²`` for ``i = 0..n_generations`` (``n_generations`` refits after the first fit).

    Gerstgrasser et al.: linear growth when data are replaced, a bound
    independent of ``i`` when they accumulate, and logarithmic growth for
    their control that replaces the data with a synthetic set grown to
    accumulate's size.

    Index ``i`` as in :func:`mcutils.simulate.linear_regression_chain`
    (``i = 0``: the fit on real data; the paper's iteration ``n = i + 1``),
    whose docstring derives each form.  With ``c = σ² d / (T - d - 1)``:

    - ``"replace"``: ``c (i + 1)``;
    - ``"accumulate"``: ``c Σ_{k=1}^{i+1} 1/k²`` (< ``c π²/6``);
    - ``"replace-grown"`` (model ``i`` fitted on the same ``X`` stacked
      ``i + 1`` times, every copy labelled by ``ŵ_{i-1}`` with fresh noise):
      ``c Σ_{k=1}^{i+1} 1/k = c H_{i+1}``, the harmonic number, which lies
      between ``c (ln(i + 1) + γ)`` and ``c (ln(i + 1) + γ + 1/(2(i + 1)))``
      (Euler's ``γ ≈ 0.5772``): unbounded, like replace, but only
      logarithmic, far below replace's ``c (i + 1)``.

    Needs ``T > d + 1``.
    """
    d = validate.positive_int("dim", dim)
    t = validate.positive_int("n_samples", n_samples)
    sigma2 = validate.number("noise_var", noise_var, minimum=0.0)
    g = validate.non_negative_int("n_generations", n_generations) + 1  # models, generation 0 included
    validate.choice("policy", policy, ["replace", "accumulate", "replace-grown"])
    if t <= d + 1:
        raise validate.ParameterError(f"n_samples must be > dim + 1 = {d + 1} for a finite expected error, got {t}")
    c = sigma2 * d / (t - d - 1)
    k = np.arange(1, g + 1)
    if policy == "replace":
        return c * k
    if policy == "replace-grown":
        return c * np.cumsum(1.0 / k)
    return c * np.cumsum(1.0 / k**2)


def linear_regression_accumulate_limit(dim: int, n_samples: int, noise_var: float) -> float:
    """The accumulate error's limit ``σ² d/(T - d - 1) · π²/6`` (Gerstgrasser et al.'s bound)."""
    return float(linear_regression_error(dim, n_samples, noise_var, 0)[0] * np.pi**2 / 6)
