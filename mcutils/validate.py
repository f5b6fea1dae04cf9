"""Parameter checks that run before any long work.

Every chapter and every public entry point calls these on its parameters
first, so a bad value fails at once with a message that names the parameter,
what it got and what is allowed.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable


class UserError(Exception):
    """A problem the user can fix (a setting, a damaged or unwritable runs folder, a busy chain).

    Command lines print it as one line (``error: ...``), without a traceback;
    tracebacks are kept for bugs.
    """


class ParameterError(UserError, ValueError):
    """A parameter value that is not allowed."""


MAX_SEED = 2**32 - 1  # numpy's legacy seeding (np.random.seed, Trainer's set_seed) takes [0, 2**32)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[minimum, maximum]``."""
    if not _is_int(value):
        raise ParameterError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ParameterError(f"{name} must be an integer <= {maximum}, got {value}")
    return int(value)


def boolean(name: str, value) -> bool:
    """``True`` or ``False`` (numpy's bools too): a switch given 1, "no" or None is refused, not guessed."""
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def positive_int(name: str, value) -> int:
    """An integer >= 1 (sample sizes, generation counts, runs)."""
    return integer(name, value, minimum=1)


def non_negative_int(name: str, value) -> int:
    """An integer >= 0 (seeds)."""
    return integer(name, value, minimum=0)


def seed(name: str, value, *, maximum: int = MAX_SEED) -> int:
    """A seed: an integer in ``[0, maximum]`` (``maximum`` leaves room for seeds derived from it)."""
    return integer(name, value, minimum=0, maximum=maximum)


def seed_key(name: str, value) -> int | list[int]:
    """A seed for ``numpy.random.default_rng``: an integer >= 0, or a sequence of them.

    The book's one seeding convention: a chapter passes ``[seed, STREAM, k]``
    (its own seed, a named stream, an index) instead of seed arithmetic such
    as ``seed + 1000 * k``, so that two streams can never collide.
    """
    if isinstance(value, (list, tuple)) and value:
        return [non_negative_int(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if _is_int(value) and value >= 0:
        return int(value)
    raise ParameterError(f"{name} must be an integer >= 0 or a non-empty sequence of them, got {value!r}")


def number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
           strict_minimum: bool = False) -> float:
    """A real number in a range; ``strict_minimum`` excludes the minimum itself."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite real number, got {value!r}")
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise ParameterError(f"{name} must be > {minimum}, got {value}")
        if not strict_minimum and value < minimum:
            raise ParameterError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ParameterError(f"{name} must be <= {maximum}, got {value}")
    return float(value)


def fraction(name: str, value) -> float:
    """A number in [0, 1]."""
    return number(name, value, minimum=0.0, maximum=1.0)


def choice(name: str, value, allowed: Iterable):
    """One of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ParameterError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def int_list(name: str, values, *, minimum: int = 1) -> list[int]:
    """A non-empty list of integers >= ``minimum``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ParameterError(f"{name} must be a list of integers, got {values!r}")
    values = list(values)
    if not values:
        raise ParameterError(f"{name} must be a non-empty list of integers")
    return [integer(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values)]


def resolve_device(device: str = "auto") -> str:
    """Map the shared ``device`` parameter to a torch device string.

    ``"auto"`` picks ``"cuda"`` when a GPU is present and ``"cpu"`` otherwise;
    asking for ``"cuda"`` without a GPU is an error, not a silent fallback.
    """
    choice("device", device if not str(device).startswith("cuda:") else "cuda",
           ["auto", "cpu", "cuda", "mps"])
    try:
        import torch
    except ImportError:  # numpy-only chapters do not need torch
        if device in ("auto", "cpu"):
            return "cpu"
        raise ParameterError(f"device={device!r} needs PyTorch, which is not installed")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(
            f"device={device!r} was asked for but no CUDA GPU is visible; "
            "use device='cpu' or 'auto' (the quick profile runs on the CPU)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ParameterError("device='mps' was asked for but MPS is not available; use 'cpu' or 'auto'")
    return device
