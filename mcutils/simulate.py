"""Vectorised simulations of learning with generational data.

Three chains, each simulated for many independent runs at once with numpy:

:func:`discrete_chain`
    Shumailov et al. §3.1 ("discrete distributions with exact
    approximation"): a categorical distribution re-estimated from ``M``
    samples of itself, generation after generation.
:func:`gaussian_chain`
    Shumailov et al. §3.2, Theorem 3.1 ("multidimensional Gaussian"): a
    Gaussian refitted with the sample mean and covariance of ``M`` samples of
    the previous fit, with the three ways of forming the next training set
    (replace, accumulate, accumulate-subsample) of
    :mod:`mcutils.generational`.
:func:`linear_regression_chain`
    Gerstgrasser et al.'s linear-regression analysis (after Dohmatob et al.): least squares
    refitted on labels produced by the previous model, with the data
    replaced or accumulated (and a replaced set grown to accumulate's size).

Exact, not approximate: wherever the fitted parameters depend on a sample
only through sufficient statistics whose law is known, the statistics are
drawn directly instead of the samples.

- counts of ``M`` categorical draws are multinomial;
- the mean of ``n`` draws of ``N(μ, Σ)`` is ``N(μ, Σ/n)``, independent of the
  scatter matrix ``Σ (x_j - x̄)(x_j - x̄)ᵀ ~ Wishart_d(n - 1, Σ)`` (chi-square
  ``σ² χ²_{n-1}`` in one dimension), drawn by the Bartlett decomposition;
- pooled statistics combine exactly: sizes add, means average with weights
  and scatters add with the parallel-axis term
  ``n₁n₂/(n₁+n₂) (x̄₁ - x̄₂)(x̄₁ - x̄₂)ᵀ``;
- an OLS fit on a fixed design ``X`` depends on ``X`` only through ``XᵀX``,
  which for Gaussian rows is ``Wishart_d(T, I)``, and its error on the noise
  only through ``(XᵀX)⁻¹Xᵀε ~ N(0, σ²(XᵀX)⁻¹)``.

Where no such shortcut is exact (a subsample of a pool that earlier
subsamples also drew from), the chains keep the actual samples.

Seeds: every function takes ``seed`` (an integer >= 0 or a
``numpy.random.Generator``) and is deterministic given it.
"""
from __future__ import annotations

import numpy as np

from . import validate
from .generational import Policy, make_policy

# Largest number of float64 values a chain may hold for an exact
# accumulate-subsample simulation (the pool of every sample so far): 2 GiB.
MAX_POOL_VALUES = 2**28


# ----------------------------------------------------------------- helpers

def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(validate.seed_key("seed", seed))  # an int, or [seed, STREAM, k]


def _policy(policy) -> Policy:
    try:
        return make_policy(policy)
    except validate.ParameterError:
        raise
    except TypeError as exc:  # e.g. an unhashable value
        raise validate.ParameterError(f"policy must be a policy name or Policy, got {policy!r}") from exc


def _bartlett(rng: np.random.Generator, dof: int, shape: tuple, d: int) -> np.ndarray:
    """Lower-triangular ``A`` with ``A Aᵀ ~ Wishart_d(dof, I)`` (Bartlett), shape ``shape + (d, d)``.

    Diagonal: ``A_kk = sqrt(χ²_{dof-k})`` for ``k = 0..d-1``; below it,
    independent standard normals.  Needs ``dof >= d``.
    """
    a = np.zeros(shape + (d, d))
    diag = np.sqrt(rng.chisquare(dof - np.arange(d), size=shape + (d,)))
    idx = np.arange(d)
    a[..., idx, idx] = diag
    if d > 1:
        rows, cols = np.tril_indices(d, k=-1)
        a[..., rows, cols] = rng.standard_normal(shape + (rows.size,))
    return a


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Batched lower Cholesky factor; falls back to a symmetric square root for
    covariances that have become numerically singular (a collapsed chain)."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov)
        return v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def _batch_stats(rng, mu, chol, n):
    """Mean and scatter matrix of ``n`` draws of ``N(mu, chol cholᵀ)``, per run, exactly.

    ``mu`` is ``(R, d)``, ``chol`` ``(R, d, d)``.  Uses the sufficient
    statistics (normal mean, Bartlett Wishart scatter) when ``n - 1 >= d``
    and actual samples otherwise (a singular Wishart).
    """
    r, d = mu.shape
    if n - 1 >= d:
        mean = mu + np.einsum("rij,rj->ri", chol, rng.standard_normal((r, d))) / np.sqrt(n)
        ca = chol @ _bartlett(rng, n - 1, (r,), d)
        return mean, ca @ np.swapaxes(ca, -1, -2)
    x = mu[:, None, :] + rng.standard_normal((r, n, d)) @ np.swapaxes(chol, -1, -2)
    return _data_stats(x)


def _data_stats(x):
    """Mean ``(R, d)`` and scatter matrix ``(R, d, d)`` of samples ``x`` of shape ``(R, n, d)``."""
    mean = x.mean(axis=1)
    centred = x - mean[:, None, :]
    return mean, np.einsum("rni,rnj->rij", centred, centred)


def _combine(n1, mean1, scatter1, n2, mean2, scatter2):
    """Pool two samples' statistics exactly (parallel-axis rule)."""
    n = n1 + n2
    delta = mean2 - mean1
    mean = mean1 + delta * (n2 / n)
    scatter = scatter1 + scatter2 + (n1 * n2 / n) * delta[:, :, None] * delta[:, None, :]
    return n, mean, scatter


def _gather(data: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """``data[r, pick[r]]`` for every run ``r`` (``data`` is ``(R, N, ...)``), by flat indexing."""
    n_runs, n = data.shape[:2]
    flat = data.reshape((n_runs * n,) + data.shape[2:])
    return flat[np.arange(n_runs)[:, None] * n + pick]


def _subsample_indices(rng, n_runs: int, population: int, size: int) -> np.ndarray:
    """Per run, ``size`` distinct indices drawn uniformly from ``range(population)``.

    Draw ``size`` indices with replacement, then redraw every duplicate until
    none is left.  The procedure commutes with any relabelling of the
    population, so the final set is uniform over all ``size``-subsets (the
    order of indices inside a row is not uniform, and does not matter here).
    """
    if size == population:
        return np.broadcast_to(np.arange(population), (n_runs, population))
    if 2 * size > population:  # dense: random keys, O(population) per run
        keys = rng.random((n_runs, population))
        return np.argpartition(keys, size - 1, axis=1)[:, :size]
    idx = np.sort(rng.integers(0, population, size=(n_runs, size)), axis=1)
    while True:
        dup = idx[:, 1:] == idx[:, :-1]
        n_dup = int(dup.sum())
        if n_dup == 0:
            return idx
        tail = idx[:, 1:]
        tail[dup] = rng.integers(0, population, size=n_dup)
        idx.sort(axis=1)


# ----------------------------------------------------------- discrete chain

def _check_p0(p0) -> np.ndarray:
    p = np.asarray(p0, dtype=float)
    if p.ndim != 1 or p.size < 1:
        raise validate.ParameterError(f"p0 must be a 1-D array of probabilities, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise validate.ParameterError(f"p0 must hold finite non-negative probabilities, got {p0!r}")
    if abs(p.sum() - 1.0) > 1e-9:
        raise validate.ParameterError(f"p0 must sum to 1, got sum {p.sum():.12g}")
    return p / p.sum()


def discrete_chain(p0, n_samples: int, n_generations: int, n_runs: int = 1, seed=0) -> np.ndarray:
    """Resample a categorical distribution from itself (Shumailov et al. §3.1).

    Row 0 of each run is ``p0``.  Generation ``t + 1`` draws ``n_samples``
    (the paper's ``M``) categories from row ``t`` and takes their frequencies
    (``counts / M``, the maximum-likelihood fit with no approximation error,
    ``F(p) = p`` in the paper).  The counts are drawn as one multinomial
    vector per run, which is exactly the law of ``M`` categorical draws.

    Returns an array ``(n_runs, n_generations + 1, K)`` of probabilities.
    A category that gets no draw is lost for good; a run whose row is a
    delta (one category with probability 1) stays there: the absorbing
    states of this Markov chain.
    """
    p = _check_p0(p0)
    m = validate.positive_int("n_samples", n_samples)
    g = validate.non_negative_int("n_generations", n_generations)
    r = validate.positive_int("n_runs", n_runs)
    rng = _rng(seed)
    out = np.empty((r, g + 1, p.size))
    out[:, 0] = p
    for t in range(g):
        out[:, t + 1] = rng.multinomial(m, out[:, t]) / m
    return out


def discrete_absorption(p0, n_samples: int, n_runs: int = 1, seed=0,
                        max_generations: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Run the discrete chain of :func:`discrete_chain` until every run is a delta.

    Keeps only the counts of runs not yet absorbed, so runs of any length
    cost memory ``O(n_runs · K)``.  Returns ``(times, states)``: the first
    generation at which each run is a delta (0 if ``p0`` already is one) and
    the category it is absorbed in.  Runs still mixed after
    ``max_generations`` get time ``-1`` and state ``-1``.
    """
    p = _check_p0(p0)
    m = validate.positive_int("n_samples", n_samples)
    r = validate.positive_int("n_runs", n_runs)
    cap = validate.positive_int("max_generations", max_generations)
    rng = _rng(seed)
    times = np.full(r, -1, dtype=np.int64)
    states = np.full(r, -1, dtype=np.int64)
    if p.max() == 1.0:
        times[:] = 0
        states[:] = int(np.argmax(p))
        return times, states
    active = np.arange(r)
    probs = np.broadcast_to(p, (r, p.size)).copy()
    for t in range(1, cap + 1):
        counts = rng.multinomial(m, probs)
        done = counts.max(axis=1) == m
        if done.any():
            times[active[done]] = t
            states[active[done]] = np.argmax(counts[done], axis=1)
            active, counts = active[~done], counts[~done]
            if active.size == 0:
                break
        probs = counts / m
    return times, states


# ----------------------------------------------------------- Gaussian chain

def _check_gaussian(mean, cov) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mean, dtype=float))
    if mu.ndim != 1:
        raise validate.ParameterError(f"mean must be a number or a 1-D array, got shape {mu.shape}")
    d = mu.size
    sigma = np.asarray(cov, dtype=float)
    if sigma.ndim == 0:
        sigma = sigma.reshape(1, 1) if d == 1 else None
    if sigma is None or sigma.shape != (d, d):
        raise validate.ParameterError(
            f"cov must be a ({d}, {d}) matrix to match mean (a number only when d = 1), "
            f"got {np.shape(cov)}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise validate.ParameterError("mean and cov must be finite")
    if not np.allclose(sigma, sigma.T, rtol=1e-10, atol=1e-12):
        raise validate.ParameterError("cov must be symmetric")
    try:
        np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        raise validate.ParameterError("cov must be positive definite") from None
    return mu, (sigma + sigma.T) / 2


def gaussian_chain(mean, cov, n_samples: int, n_generations: int, n_runs: int = 1, seed=0,
                   policy: str | Policy = "replace", ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Refit a Gaussian on samples of its previous fit (Shumailov et al. §3.2, Theorem 3.1).

    Generation 0 is the true Gaussian ``N(mean, cov)``.  The step from
    generation ``i`` to ``i + 1`` draws ``X^i``: ``n_samples`` (``M``) points
    from generation ``i``, forms the training set ``D_i`` by ``policy`` and
    fits generation ``i + 1`` as the sample mean and the sample covariance
    ``scatter / (|D_i| - ddof)``.  ``X^0`` is drawn from the truth: it is
    the "real data", ``D_0 = X^0`` under every policy.

    ``policy`` (the names of :mod:`mcutils.generational`; the three
    "approaches" of Shumailov et al.'s Gaussian example):

    ``"replace"``
        ``D_i = X^i``.  Exact statistics: mean ``~ N(μ_i, Σ_i/M)``, scatter
        ``~ Wishart(M - 1, Σ_i)``, so ``Σ_{i+1} = L_i A Aᵀ L_iᵀ / (M - ddof)``
        with ``A`` the Bartlett factor; the Cholesky factor is carried
        along as ``L_{i+1} = L_i A / sqrt(M - ddof)`` (no refactorisation).
        A :class:`~mcutils.generational.Policy` with ``real_fraction = f``
        keeps ``round(f M)`` points of ``X^0``, drawn afresh each generation
        without replacement (actual points), plus ``M - round(f M)`` new
        ones (exact statistics).
    ``"accumulate"``
        ``D_i = X^0 ∪ … ∪ X^i`` (``(i + 1) M`` points).  Exact: each new
        batch's statistics are pooled into the running ones with the
        parallel-axis rule.
    ``"accumulate-subsample"``
        ``D_i`` = ``M`` points drawn uniformly without replacement from that
        pool.  Successive subsamples reuse the same pooled points, so no
        independent-statistics shortcut is exact: the chain keeps every
        sample (memory ``n_runs · n_generations · M · d`` floats, refused
        above :data:`MAX_POOL_VALUES`).

    ``ddof=1`` gives the unbiased estimators of Theorem 3.1; ``ddof=0`` the
    maximum-likelihood fit used by the official notebook.

    Returns ``(means, covs)`` of shapes ``(n_runs, n_generations + 1, d)``
    and ``(n_runs, n_generations + 1, d, d)``; ``mean`` and ``cov`` may be a
    number each for ``d = 1``.  Needs ``n_samples >= d + 1`` so that every
    fitted covariance is non-singular.
    """
    mu0, sigma0 = _check_gaussian(mean, cov)
    d = mu0.size
    m = validate.positive_int("n_samples", n_samples)
    g = validate.non_negative_int("n_generations", n_generations)
    r = validate.positive_int("n_runs", n_runs)
    validate.choice("ddof", ddof, [0, 1])
    pol = _policy(policy)
    if m < d + 1:
        raise validate.ParameterError(
            f"n_samples must be >= d + 1 = {d + 1} for a non-singular sample covariance, got {m}")
    if pol.name == "accumulate-subsample" and r * max(g, 1) * m * d > MAX_POOL_VALUES:
        raise validate.ParameterError(
            f"policy='accumulate-subsample' keeps every sample: n_runs * n_generations * n_samples * d "
            f"= {r * g * m * d:,} floats exceeds {MAX_POOL_VALUES:,}; use fewer runs or generations")
    rng = _rng(seed)

    means = np.empty((r, g + 1, d))
    covs = np.empty((r, g + 1, d, d))
    means[:, 0], covs[:, 0] = mu0, sigma0
    mu = np.broadcast_to(mu0, (r, d)).copy()
    chol = np.broadcast_to(np.linalg.cholesky(sigma0), (r, d, d)).copy()

    def record(i, new_mu, new_cov):
        means[:, i], covs[:, i] = new_mu, new_cov

    if pol.name == "replace" and pol.n_real_kept(m) == 0:
        scale = 1.0 / np.sqrt(m - ddof)
        for i in range(g):
            mu = mu + np.einsum("rij,rj->ri", chol, rng.standard_normal((r, d))) / np.sqrt(m)
            chol = chol @ _bartlett(rng, m - 1, (r,), d) * scale
            record(i + 1, mu, chol @ np.swapaxes(chol, -1, -2))
        return means, covs

    if pol.name == "replace":  # with a fraction of the real data kept
        k = pol.n_real_kept(m)
        real = mu0 + rng.standard_normal((r, m, d)) @ np.swapaxes(chol, -1, -2)
        for i in range(g):
            if i == 0:
                new_mu, scatter = _data_stats(real)
            else:
                pick = _subsample_indices(rng, r, m, k)
                new_mu, scatter = _data_stats(_gather(real, pick))
                if m - k > 0:
                    _, new_mu, scatter = _combine(k, new_mu, scatter, m - k, *_batch_stats(rng, mu, chol, m - k))
            mu, cov_next = new_mu, scatter / (m - ddof)
            record(i + 1, mu, cov_next)
            chol = _cholesky(cov_next)
        return means, covs

    if pol.name == "accumulate":
        n_pool = 0
        for i in range(g):
            batch_mean, batch_scatter = _batch_stats(rng, mu, chol, m)
            if n_pool == 0:
                n_pool, pool_mean, pool_scatter = m, batch_mean, batch_scatter
            else:
                n_pool, pool_mean, pool_scatter = _combine(n_pool, pool_mean, pool_scatter,
                                                           m, batch_mean, batch_scatter)
            mu, cov_next = pool_mean, pool_scatter / (n_pool - ddof)
            record(i + 1, mu, cov_next)
            chol = _cholesky(cov_next)
        return means, covs

    # accumulate-subsample: keep the pool of actual samples
    pool = np.empty((r, max(g, 1) * m, d))
    for i in range(g):
        pool[:, i * m:(i + 1) * m] = mu[:, None, :] + rng.standard_normal((r, m, d)) @ np.swapaxes(chol, -1, -2)
        pick = _subsample_indices(rng, r, (i + 1) * m, m)
        mu, scatter = _data_stats(_gather(pool, pick))
        cov_next = scatter / (m - ddof)
        record(i + 1, mu, cov_next)
        chol = _cholesky(cov_next)
    return means, covs


# ------------------------------------------------- linear regression chain

def _least_squares(x, y):
    """Batched OLS ``(XᵀX)⁻¹Xᵀy`` (shape ``(R, d, 1)``); minimum-norm if some ``X`` is rank-deficient."""
    xt = np.swapaxes(x, -1, -2)
    try:
        return np.linalg.solve(xt @ x, xt @ y[..., None])
    except np.linalg.LinAlgError:
        return np.linalg.pinv(x) @ y[..., None]


def linear_regression_chain(dim: int, n_samples: int, noise_var: float, n_generations: int,
                            n_runs: int = 1, seed=0, policy: str | Policy = "replace") -> np.ndarray:
    """Least squares refitted on its own labels (Gerstgrasser et al., linear-regression analysis).

    The setting (after Dohmatob et al., as analysed by Gerstgrasser et al.):
    in each run a design ``X`` of ``T = n_samples`` rows drawn i.i.d. from
    ``N(0, I_dim)`` stays fixed, and so does a true ``w*``.  The real
    labels are ``y⁽⁰⁾ = X w* + ε⁽⁰⁾``; model ``ŵ_0`` is the OLS fit on
    ``(X, y⁽⁰⁾)``.  Iteration ``i >= 1`` relabels the same ``X`` with the
    previous model plus fresh noise, ``y⁽ⁱ⁾ = X ŵ_{i-1} + ε⁽ⁱ⁾``, all noise
    ``N(0, noise_var · I_T)``, and fits ``ŵ_i`` by OLS on

    ``"replace"``
        ``(X, y⁽ⁱ⁾)`` only;
    ``"accumulate"``
        every dataset so far stacked, ``([X; …; X], [y⁽⁰⁾; …; y⁽ⁱ⁾])``
        (``(i + 1) T`` rows), which is OLS on ``X`` with the average label
        vector;
    ``"accumulate-subsample"``
        ``T`` rows drawn uniformly without replacement from that stack
        (minimum-norm least squares if the drawn rows happen to repeat so
        much that they lose rank);
    ``"replace-grown"``
        Gerstgrasser et al.'s control, "synthetic data only, but growing":
        model ``i`` (``i >= 1``) sees no real label and none of the earlier
        synthetic ones, but ``(i + 1) T`` rows, as many as accumulate's
        stack, all labelled by ``ŵ_{i-1}``.  They are formed as the same
        design stacked ``i + 1`` times, each copy with its own fresh noise,
        ``([X; …; X], [Xŵ_{i-1} + ε_{i,1}; …; Xŵ_{i-1} + ε_{i,i+1}])``.  (The
        paper's iteration ``n`` has ``T·n`` rows; it is our ``i = n - 1``.)
        This keeps the setting's fixed design; rows with a freshly drawn
        design would give a fit whose variance has ``d/((i + 1)T - d - 1)``
        in place of ``d/((i + 1)(T - d - 1))``, not the paper's exact ``1/n``.

    Returns ``errors`` of shape ``(n_runs, n_generations + 1)``:
    ``errors[:, i] = ‖ŵ_i - w*‖²``, so column 0 is the model fitted on real
    data (generation 0, the paper's iteration 1) and ``n_generations`` counts
    the refits after it, as for every chain of the book.  This is also the
    test error ``E_x[(xᵀŵ - xᵀw*)²]`` for isotropic test points.

    Closed forms (:func:`mcutils.theory.linear_regression_error`).  With
    ``P = (XᵀX)⁻¹Xᵀ`` and ``δ_j = P ε⁽ʲ⁾ ~ N(0, σ² (XᵀX)⁻¹)`` independent:

    - replace: ``ŵ_i - w* = δ_0 + … + δ_i``, so
      ``E errors[:, i] = σ² d (i + 1) / (T - d - 1)``: linear growth;
    - accumulate: ``(i + 1)(ŵ_i - w*) = Σ_{j<=i} (ŵ_{j-1} - w* + δ_j)``
      (with ``ŵ_{-1} := w*``) telescopes to ``ŵ_i - w* = Σ_{j=0}^{i} δ_j/(j + 1)``,
      so ``E errors[:, i] = σ² d/(T - d - 1) · Σ_{k=1}^{i+1} 1/k²``, bounded
      by ``σ² d/(T - d - 1) · π²/6`` for every ``i``;
    - replace-grown: OLS on ``i + 1`` copies of ``X`` is OLS on ``X`` with the
      average of the ``i + 1`` label vectors, ``Xŵ_{i-1} + ε̄`` with
      ``ε̄ ~ N(0, σ²/(i + 1) · I_T)``, so ``ŵ_i = ŵ_{i-1} + P ε̄`` and, in
      law, ``ŵ_i - w* = Σ_{j=0}^{i} δ_j/sqrt(j + 1)``:
      ``E errors[:, i] = σ² d/(T - d - 1) · Σ_{k=1}^{i+1} 1/k``, which grows
      like ``ln(i + 1) + γ`` (Euler's γ): without bound, but only
      logarithmically;

    using ``E tr (XᵀX)⁻¹ = d/(T - d - 1)`` (mean of an inverse Wishart;
    finite for ``T > d + 1``).

    How it is simulated: replace, accumulate and replace-grown depend on ``X`` only
    through ``XᵀX ~ Wishart_d(T, I) = A Aᵀ`` (Bartlett) and on the noise only
    through ``δ_j = σ A⁻ᵀ z_j`` with ``z_j ~ N(0, I_d)``, which is what is
    drawn (replace-grown's ``P ε̄`` is ``δ_j/sqrt(j + 1)``): exact in
    distribution, independent of ``w*``, with cost
    ``O(n_runs · n_generations · d)``.  accumulate-subsample keeps the real
    design ``X`` and every label vector; since OLS is equivariant under
    ``y → y + Xv`` whenever the subsample has full column rank, errors are
    computed with ``w* = 0``.

    Needs ``n_samples >= dim`` (OLS is then unique with probability 1).
    Deterministic given ``seed``; column 0 has the same law under every
    policy, but the policies consume random numbers differently, so one
    seed does not give the same design to two policies: compare them in
    distribution (means over runs), not run by run.
    """
    d = validate.positive_int("dim", dim)
    t = validate.positive_int("n_samples", n_samples)
    sigma2 = validate.number("noise_var", noise_var, minimum=0.0)
    g = validate.non_negative_int("n_generations", n_generations) + 1  # models fitted, generation 0 included
    r = validate.positive_int("n_runs", n_runs)
    # "replace-grown" is a control of this chain only, not a policy of mcutils.generational
    grown = isinstance(policy, str) and policy == "replace-grown"
    pol = _policy("replace" if grown else policy)
    if pol.real_fraction > 0:
        raise validate.ParameterError("linear_regression_chain takes no real_fraction; use policy 'replace', "
                                      "'accumulate', 'accumulate-subsample' or 'replace-grown'")
    if t < d:
        raise validate.ParameterError(f"n_samples must be >= dim = {d} for a unique least-squares fit, got {t}")
    if pol.name == "accumulate-subsample" and r * g * t > MAX_POOL_VALUES:
        raise validate.ParameterError(
            f"policy='accumulate-subsample' keeps every label: n_runs * (n_generations + 1) * n_samples "
            f"= {r * g * t:,} values exceeds {MAX_POOL_VALUES:,}; use fewer runs or generations")
    rng = _rng(seed)
    sigma = np.sqrt(sigma2)

    if pol.name in ("replace", "accumulate"):
        a = _bartlett(rng, t, (r,), d)  # XᵀX = A Aᵀ
        z = rng.standard_normal((r, d, g))
        delta = sigma * np.linalg.solve(np.swapaxes(a, -1, -2), z)  # σ A⁻ᵀ z ~ N(0, σ²(XᵀX)⁻¹)
        if pol.name == "accumulate":
            delta = delta / np.arange(1, g + 1)
        elif grown:  # model i averages i + 1 fresh noise vectors: P ε̄ ~ δ_i / sqrt(i + 1)
            delta = delta / np.sqrt(np.arange(1, g + 1))
        return (np.cumsum(delta, axis=-1) ** 2).sum(axis=1)

    # accumulate-subsample: actual design and labels, w* = 0
    x = rng.standard_normal((r, t, d))
    labels = np.empty((r, g, t))
    labels[:, 0] = sigma * rng.standard_normal((r, t))
    w = _least_squares(x, labels[:, 0])  # (r, d, 1)
    errors = np.empty((r, g))
    errors[:, 0] = (w[..., 0] ** 2).sum(axis=1)
    for i in range(1, g):
        labels[:, i] = (x @ w)[..., 0] + sigma * rng.standard_normal((r, t))
        pick = _subsample_indices(rng, r, (i + 1) * t, t)  # index gen * T + row of the stacked pool
        w = _least_squares(_gather(x, pick % t), _gather(labels.reshape(r, g * t), pick))
        errors[:, i] = (w[..., 0] ** 2).sum(axis=1)
    return errors
