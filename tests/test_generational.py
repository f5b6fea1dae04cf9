"""The data-mixing policies and the fit → sample → mix loop (mcutils.generational).

Synthetic points carry their origin in their value: real points are 0 … n-1,
and the model of generation g samples g·BASE + 0 … n-1 (made unique by a
counter), so the composition of every training set can be read off exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

from mcutils.generational import POLICIES, Generation, Policy, generational_loop, make_policy
from mcutils.validate import ParameterError

N = 40
BASE = 1_000_000


def origin(values) -> np.ndarray:
    """0 for a real point, g + 1 for a point sampled by the model of generation g."""
    values = np.asarray(values)
    return np.where(values < BASE, 0, values // BASE)


def tagging_model():
    """fit/sample pair whose samples are unique and name the generation that drew them."""
    fitted = []

    def fit(data, rng):
        fitted.append(data)
        return len(fitted) - 1  # the model is its generation index

    def sample(model, n, rng):
        return (model + 1) * BASE + np.arange(n)

    return fit, sample, fitted


def run(policy, n_generations=4, real=None, **kwargs):
    real = np.arange(N) if real is None else real
    fit, sample, fitted = tagging_model()
    gens = list(generational_loop(real, fit, sample, n_generations, policy, **kwargs))
    return gens, fitted


# --- the loop ---------------------------------------------------------------------------

def test_generation_zero_is_fitted_on_the_real_data_and_the_last_draws_nothing():
    real = np.arange(N)
    gens, fitted = run("replace", n_generations=3, real=real)
    assert [g.index for g in gens] == [0, 1, 2, 3]
    assert all(isinstance(g, Generation) for g in gens)
    assert fitted[0] is real and gens[0].data is real
    assert [g.model for g in gens] == [0, 1, 2, 3]
    assert all(len(g.samples) == N for g in gens[:-1]) and gens[-1].samples is None
    # each generation is fitted on the data it reports
    assert all(g.data is f for g, f in zip(gens, fitted))


def test_zero_generations_fits_the_real_data_only():
    gens, fitted = run("accumulate", n_generations=0)
    assert len(gens) == 1 and len(fitted) == 1 and gens[0].samples is None


def test_the_caller_can_stop_early():
    fit, sample, fitted = tagging_model()
    loop = generational_loop(np.arange(N), fit, sample, 100)
    for g in loop:
        if g.index == 2:
            break
    assert len(fitted) == 3


def test_n_samples_sets_the_size_of_each_draw():
    gens, _ = run("replace", n_generations=2, n_samples=7)
    assert len(gens[0].samples) == 7 and len(gens[1].data) == 7


# --- the policies -----------------------------------------------------------------------

def test_replace_trains_each_model_on_its_parents_samples_only():
    gens, _ = run("replace")
    for g in gens[1:]:
        assert len(g.data) == N
        assert set(origin(g.data)) == {g.index}  # samples of the model of generation g - 1
        np.testing.assert_array_equal(g.data, gens[g.index - 1].samples)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
def test_replace_with_real_fraction_keeps_that_share_of_fresh_real_points(fraction):
    gens, _ = run(Policy("replace", fraction), n_generations=6)
    k = int(round(fraction * N))
    real_sets = []
    for g in gens[1:]:
        kinds = origin(g.data)
        assert len(g.data) == N
        assert np.sum(kinds == 0) == k  # γ = fraction: real points
        assert np.sum(kinds == g.index) == N - k  # α = 1 - fraction: the newest model's samples
        assert len(np.unique(g.data)) == N  # no point drawn twice
        real_sets.append(frozenset(g.data[kinds == 0].tolist()))
    if 0 < k < N:  # a fresh random subset each generation, not the same one
        assert len(set(real_sets)) > 1


def test_accumulate_keeps_everything_and_grows_by_one_draw_a_generation():
    real = np.arange(N)
    gens, _ = run("accumulate", n_generations=5, real=real)
    for g in gens:
        assert len(g.data) == (g.index + 1) * N
        counts = np.bincount(origin(g.data), minlength=g.index + 1)
        np.testing.assert_array_equal(counts, [N] * (g.index + 1))  # D_0 and S_0 … S_{i-1}
        np.testing.assert_array_equal(g.data[:N], real)  # the real data are all there


def test_accumulate_subsample_draws_a_fixed_size_without_replacement_from_the_pool():
    gens, _ = run("accumulate-subsample", n_generations=30)
    pool = set(range(N))
    for g in gens[1:]:
        pool |= set(gens[g.index - 1].samples.tolist())
        assert len(g.data) == N
        assert len(np.unique(g.data)) == N  # without replacement
        assert set(g.data.tolist()) <= pool
    # late training sets mix many generations; the real share shrinks like 1 / (i + 1)
    late = np.concatenate([g.data for g in gens[20:]])
    assert len(np.unique(origin(late))) > 5
    assert np.mean(origin(late) == 0) < 0.2


def test_subsample_is_uniform_over_the_pool():
    # over many draws from a pool of D_0 ∪ S_0 (two equal halves), each half gets about half
    policy = make_policy("accumulate-subsample")
    rng = np.random.default_rng(0)
    real, synth = np.arange(N), BASE + np.arange(N)
    shares = [np.mean(origin(policy.next_training_set(real, [synth], rng)) == 0) for _ in range(2000)]
    assert abs(np.mean(shares) - 0.5) < 0.01


def test_seed_makes_the_loop_reproducible_and_a_generator_is_used_as_given():
    def fit(data, rng):
        return float(np.mean(data)), float(np.std(data, ddof=1))

    def sample(model, n, rng):
        return rng.normal(model[0], model[1], size=n)

    real = np.random.default_rng(1).normal(size=N)
    a = [g.model for g in generational_loop(real, fit, sample, 5, "accumulate-subsample", seed=3)]
    b = [g.model for g in generational_loop(real, fit, sample, 5, "accumulate-subsample", seed=3)]
    c = [g.model for g in generational_loop(real, fit, sample, 5, "accumulate-subsample", seed=4)]
    assert a == b and a != c
    rng = np.random.default_rng(3)
    d = [g.model for g in generational_loop(real, fit, sample, 5, "accumulate-subsample", seed=rng)]
    assert d == a


# --- containers: numpy arrays, lists, datasets.Dataset ----------------------------------

@pytest.mark.parametrize("policy", [*POLICIES, Policy("replace", 0.25)], ids=str)
def test_lists_work_like_arrays(policy):
    fit, sample, _ = tagging_model()
    as_list = list(generational_loop(list(range(N)), fit, lambda m, n, r: sample(m, n, r).tolist(),
                                     3, policy, seed=5))
    arrays, _ = run(policy, n_generations=3, seed=5)
    for g_list, g_array in zip(as_list, arrays):
        assert isinstance(g_list.data, list)
        assert g_list.data == g_array.data.tolist()


@pytest.mark.parametrize("policy", [*POLICIES, Policy("replace", 0.25)], ids=str)
def test_hugging_face_datasets_work_like_arrays(policy):
    datasets = pytest.importorskip("datasets")

    def to_ds(values):
        return datasets.Dataset.from_dict({"x": [int(v) for v in values]})

    fit, sample, _ = tagging_model()
    as_ds = list(generational_loop(to_ds(range(N)), fit, lambda m, n, r: to_ds(sample(m, n, r)),
                                   3, policy, seed=5))
    arrays, _ = run(policy, n_generations=3, seed=5)
    for g_ds, g_array in zip(as_ds, arrays):
        assert isinstance(g_ds.data, datasets.Dataset)
        assert g_ds.data["x"] == g_array.data.tolist()


def test_custom_concat_and_take_hooks_are_used():
    calls = {"concat": 0, "take": 0}

    def concat(parts):
        calls["concat"] += 1
        return tuple(x for part in parts for x in part)

    def take(data, idx):
        calls["take"] += 1
        return tuple(data[i] for i in idx)

    fit, sample, _ = tagging_model()
    gens = list(generational_loop(tuple(range(N)), fit, lambda m, n, r: tuple(sample(m, n, r)), 2,
                                  "accumulate-subsample", concat=concat, take=take))
    assert calls == {"concat": 2, "take": 2} and isinstance(gens[-1].data, tuple) and len(gens[-1].data) == N


# --- validation: bad parameters fail at once --------------------------------------------

def test_policy_labels_and_validation():
    assert make_policy("accumulate").label == "accumulate"
    assert Policy("replace", 0.1).label == "replace + 10% real"
    assert make_policy(Policy("replace", 0.1)) == Policy("replace", 0.1)
    with pytest.raises(ParameterError, match=r"policy must be one of \['replace', 'accumulate'"):
        Policy("keep-all")
    with pytest.raises(ParameterError, match="real_fraction must be <= 1"):
        Policy("replace", 1.5)
    with pytest.raises(ParameterError, match="real_fraction must be >= 0"):
        Policy("replace", -0.1)
    with pytest.raises(ParameterError, match="only applies to policy='replace'"):
        Policy("accumulate", 0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_generations=-3), "n_generations must be an integer >= 0, got -3"),
    (dict(n_generations=2.5), "n_generations must be an integer"),
    (dict(n_generations=2, policy="mix"), "policy must be one of"),
    (dict(n_generations=2, n_samples=0), "n_samples must be an integer >= 1"),
    (dict(n_generations=2, real=np.arange(0)), "real must hold at least one data point"),
    (dict(n_generations=2, policy=Policy("replace", 0.5), n_samples=4 * N), "real holds only 40"),
])
def test_bad_parameters_fail_when_the_loop_is_called_before_any_fit(kwargs, message):
    fit, sample, fitted = tagging_model()
    real = kwargs.pop("real", np.arange(N))
    with pytest.raises(ParameterError, match=message):
        generational_loop(real, fit, sample, **kwargs)  # not iterated: the call itself refuses
    assert fitted == []
