"""Learning with generational data: the data-mixing policies and the loop.

Shumailov et al. (§2, "learning with generational data") describe generation
``i`` as a dataset ``D_i`` drawn from a mixture of the current model's
samples, earlier generations' data and the original data (weights α, β, γ),
on which ``p_θ_{i+1}`` is fitted.  Gerstgrasser et al. contrast two extremes
of that mixture: *replace* (each model sees only its parent's samples) and
*accumulate* (each model sees all data so far, real data included).

Policies (the names used across the book):

``replace``
    ``D_{i+1} = S_i``: the next model sees only samples of the current one.
    With ``real_fraction = f > 0`` a fresh random ``f·n`` of the original
    data replaces as many synthetic points (the paper's second OPT setting,
    "10% of the original data kept"); the size stays ``n``.
``accumulate``
    ``D_{i+1} = D_0 ∪ S_1 ∪ … ∪ S_i`` (the pool grows by ``n`` each time;
    Gerstgrasser et al., Shumailov's third Gaussian approach).
``accumulate-subsample``
    a uniform subsample of size ``n`` of that pool (Shumailov's second
    Gaussian approach; Gerstgrasser's fixed-compute variant).
``replace-grown`` (:data:`REPLACE_GROWN`, not in :data:`POLICIES`)
    ``D_{i+1} = S_i`` with ``|S_i| = (i + 2)·n``: replace, its synthetic set
    as large as accumulate's pool (Gerstgrasser et al.'s size control).

A dataset is anything with a length: numpy arrays by default, or a
``datasets.Dataset``/list through the ``concat`` and ``take`` hooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from . import validate

POLICIES = ("replace", "accumulate", "accumulate-subsample")
# Gerstgrasser et al.'s control (Table 2, last column): replace, with the synthetic set grown to
# accumulate's size, so that generation g trains on (g + 1)·n points all drawn by model g - 1.  Only the
# from-scratch language-model chain (mcutils.lm.scratch) runs it; it is kept out of POLICIES, which the
# other chains and chapters iterate over.
REPLACE_GROWN = "replace-grown"


def _concat_default(parts):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=0)
    if isinstance(parts[0], list):
        return [x for part in parts for x in part]
    try:  # a Hugging Face datasets.Dataset
        from datasets import concatenate_datasets
        return concatenate_datasets(list(parts))
    except Exception as exc:  # pragma: no cover - unexpected container
        raise TypeError(f"cannot concatenate {type(parts[0]).__name__}; pass concat=") from exc


def _take_default(data, indices):
    if isinstance(data, np.ndarray):
        return data[indices]
    if isinstance(data, list):
        return [data[i] for i in indices]
    if hasattr(data, "select"):
        return data.select(np.asarray(indices).tolist())
    raise TypeError(f"cannot index {type(data).__name__}; pass take=")


@dataclass(frozen=True)
class Policy:
    """How the next training set is formed from the data seen so far."""

    name: str = "replace"
    real_fraction: float = 0.0

    def __post_init__(self):
        validate.choice("policy", self.name, POLICIES)
        validate.fraction("real_fraction", self.real_fraction)
        if self.real_fraction > 0 and self.name != "replace":
            raise validate.ParameterError(
                f"real_fraction={self.real_fraction} only applies to policy='replace' "
                f"(policy {self.name!r} keeps the original data already)")

    @property
    def label(self) -> str:
        if self.real_fraction > 0:
            return f"{self.name} + {self.real_fraction:.0%} real"
        return self.name

    def n_real_kept(self, n: int) -> int:
        """How many original points a ``replace`` training set of size ``n`` keeps."""
        return int(round(self.real_fraction * n))

    def next_training_set(self, real, synthetic_history: list, rng: np.random.Generator,
                          n: int | None = None, concat: Callable | None = None,
                          take: Callable | None = None):
        """Form ``D_{i+1}`` from the original data and the samples so far.

        ``synthetic_history[-1]`` is the newest model's sample ``S_i``; ``n``
        is the size of a fixed-size training set (default: ``len(real)``).
        """
        concat = concat or _concat_default
        take = take or _take_default
        newest = synthetic_history[-1]
        n = len(real) if n is None else n
        if self.name == "replace":
            k = self.n_real_kept(n)
            if k == 0:
                return newest
            real_idx = rng.choice(len(real), size=k, replace=False)
            synth_idx = rng.choice(len(newest), size=n - k, replace=False)
            return concat([take(real, np.sort(real_idx)), take(newest, np.sort(synth_idx))])
        pool = concat([real, *synthetic_history])
        if self.name == "accumulate":
            return pool
        idx = rng.choice(len(pool), size=n, replace=False)
        return take(pool, np.sort(idx))


def make_policy(policy: str | Policy = "replace", real_fraction: float = 0.0) -> Policy:
    """Build a :class:`Policy` from its name (or pass one through)."""
    if isinstance(policy, Policy):
        return policy
    return Policy(policy, real_fraction)


@dataclass
class Generation:
    """One step of the loop: the model fitted on ``data`` and what it produced."""

    index: int
    model: Any
    data: Any
    samples: Any = None
    extras: dict = field(default_factory=dict)


def generational_loop(real, fit: Callable, sample: Callable, n_generations: int,
                      policy: str | Policy = "replace", *, n_samples: int | None = None,
                      seed: int | np.random.Generator = 0, concat: Callable | None = None,
                      take: Callable | None = None) -> Iterator[Generation]:
    """The fit → sample → mix loop shared by every model family.

    Yields generation 0 (the model fitted on ``real``) and then
    ``n_generations`` more.  ``fit(data, rng)`` returns a model,
    ``sample(model, n, rng)`` returns ``n`` new data points; the next training
    set is formed by ``policy`` (see the module docstring).  A generator, so a
    caller can record, plot or stop at any generation.  The parameters are
    checked when it is called, before any ``fit``.
    """
    validate.non_negative_int("n_generations", n_generations)
    policy = make_policy(policy)
    if len(real) == 0:
        raise validate.ParameterError("real must hold at least one data point, got an empty dataset")
    n = len(real) if n_samples is None else validate.positive_int("n_samples", n_samples)
    if policy.n_real_kept(n) > len(real):
        raise validate.ParameterError(
            f"real_fraction={policy.real_fraction} keeps {policy.n_real_kept(n)} real points a "
            f"generation but real holds only {len(real)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return _loop(real, fit, sample, n_generations, policy, n, rng, concat, take)


def _loop(real, fit, sample, n_generations, policy, n, rng, concat, take) -> Iterator[Generation]:
    data = real
    history: list = []
    for index in range(n_generations + 1):
        model = fit(data, rng)
        samples = sample(model, n, rng) if index < n_generations else None
        yield Generation(index=index, model=model, data=data, samples=samples)
        if samples is None:
            break
        # replace needs only the newest sample: keep memory flat over long chains
        history = [*history, samples] if policy.name != "replace" else [samples]
        data = policy.next_training_set(real, history, rng, n=n, concat=concat, take=take)
