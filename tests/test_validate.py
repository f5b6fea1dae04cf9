"""Parameter checks (mcutils.validate): good values pass through, bad ones name the parameter."""
from __future__ import annotations

import numpy as np
import pytest

from mcutils import validate
from mcutils.validate import ParameterError


def test_integers_pass_through_as_python_ints():
    assert validate.positive_int("n", 3) == 3
    assert validate.non_negative_int("seed", 0) == 0
    value = validate.positive_int("n", np.int64(5))
    assert value == 5 and type(value) is int
    assert validate.integer("k", 7, minimum=7, maximum=7) == 7


@pytest.mark.parametrize("call, message", [
    (lambda: validate.positive_int("n_runs", 0), "n_runs must be an integer >= 1, got 0"),
    (lambda: validate.non_negative_int("n_generations", -3), "n_generations must be an integer >= 0, got -3"),
    (lambda: validate.positive_int("n_samples", 2.0), r"n_samples must be an integer, got 2.0 \(float\)"),
    (lambda: validate.positive_int("n_samples", "10"), r"n_samples must be an integer, got '10' \(str\)"),
    (lambda: validate.positive_int("n_samples", True), r"n_samples must be an integer, got True \(bool\)"),
    (lambda: validate.integer("k", 9, maximum=8), "k must be an integer <= 8, got 9"),
])
def test_bad_integers_are_refused_with_the_parameter_named(call, message):
    with pytest.raises(ParameterError, match=message):
        call()


def test_a_switch_takes_only_true_or_false():
    assert validate.boolean("last_data", False) is False
    assert validate.boolean("last_data", np.bool_(True)) is True
    for value in (1, 0, "no", None):
        with pytest.raises(ParameterError, match=f"last_data must be True or False, got {value!r}"):
            validate.boolean("last_data", value)


def test_parameter_error_is_a_value_error():
    assert issubclass(ParameterError, ValueError)


def test_numbers_and_fractions():
    assert validate.number("lr", 2e-5, minimum=0.0, strict_minimum=True) == 2e-5
    assert validate.number("x", np.float32(0.5)) == 0.5
    assert validate.fraction("real_fraction", 0) == 0.0
    assert validate.fraction("real_fraction", 1) == 1.0
    assert type(validate.fraction("real_fraction", 1)) is float


@pytest.mark.parametrize("call, message", [
    (lambda: validate.number("lr", 0.0, minimum=0.0, strict_minimum=True), "lr must be > 0.0, got 0.0"),
    (lambda: validate.number("noise_var", -1.0, minimum=0.0), "noise_var must be >= 0.0, got -1.0"),
    (lambda: validate.number("x", 3.0, maximum=2.0), "x must be <= 2.0, got 3.0"),
    (lambda: validate.number("x", float("nan")), "x must be a finite real number, got nan"),
    (lambda: validate.number("x", float("inf")), "x must be a finite real number, got inf"),
    (lambda: validate.number("x", "0.1"), "x must be a finite real number, got '0.1'"),
    (lambda: validate.number("x", False), "x must be a finite real number, got False"),
    (lambda: validate.fraction("real_fraction", 1.1), "real_fraction must be <= 1.0, got 1.1"),
    (lambda: validate.fraction("real_fraction", -0.1), "real_fraction must be >= 0.0, got -0.1"),
])
def test_bad_numbers_are_refused_with_the_parameter_named(call, message):
    with pytest.raises(ParameterError, match=message):
        call()


def test_choice_lists_the_allowed_values():
    assert validate.choice("policy", "replace", ("replace", "accumulate")) == "replace"
    with pytest.raises(ParameterError, match=r"policy must be one of \['replace', 'accumulate'\], got 'mix'"):
        validate.choice("policy", "mix", ("replace", "accumulate"))


def test_int_list():
    assert validate.int_list("sample_sizes", (100, 500)) == [100, 500]
    assert validate.int_list("offsets", [0, 2], minimum=0) == [0, 2]
    with pytest.raises(ParameterError, match="sample_sizes must be a list of integers, got '100'"):
        validate.int_list("sample_sizes", "100")
    with pytest.raises(ParameterError, match="sample_sizes must be a list of integers, got 100"):
        validate.int_list("sample_sizes", 100)
    with pytest.raises(ParameterError, match="sample_sizes must be a non-empty list"):
        validate.int_list("sample_sizes", [])
    with pytest.raises(ParameterError, match=r"sample_sizes\[1\] must be an integer >= 1, got 0"):
        validate.int_list("sample_sizes", [100, 0])


def test_resolve_device():
    torch = pytest.importorskip("torch")
    assert validate.resolve_device("cpu") == "cpu"
    assert validate.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ParameterError, match=r"device must be one of \['auto', 'cpu', 'cuda', 'mps'\], got 'tpu'"):
        validate.resolve_device("tpu")
    if torch.cuda.is_available():
        assert validate.resolve_device("cuda:0") == "cuda:0"
    else:  # asking for a GPU that is not there is an error, not a silent fallback
        for device in ("cuda", "cuda:0"):
            with pytest.raises(ParameterError, match="no CUDA GPU is visible"):
                validate.resolve_device(device)
