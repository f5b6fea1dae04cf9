"""Comparing a chapter's key numbers with the committed ones, each within its measured tolerance.

Used by ``book/conftest.py`` (every cell nbval re-executes) and by the tests
that show the comparison failing when a training setting changes.
"""
from __future__ import annotations

import math
from typing import Iterable

import pytest

from mcutils.results import KeyNumber


def deviations(reference: Iterable[KeyNumber], fresh: Iterable[KeyNumber]) -> list[str]:
    """One line per committed key number that the fresh run does not reproduce within its tolerance."""
    fresh = {n.name: n for n in fresh}
    out = []
    for ref in reference:
        if ref.tolerance is None:
            out.append(f"{ref.chapter} {ref.name}: no measured tolerance ({ref.basis})")
            continue
        new = fresh.get(ref.name)
        if new is None:
            out.append(f"{ref.chapter} {ref.name}: recorded in the committed notebook, not by the re-executed one")
        elif math.isnan(ref.value) or new.value != pytest.approx(ref.value, abs=ref.tolerance, rel=0):
            out.append(f"{ref.chapter} {ref.name} ({ref.what}): {new.value:.6g}, committed {ref.value:.6g} "
                       f"± {ref.tolerance:.3g}; off by {abs(new.value - ref.value):.3g} [{ref.basis}]")
    return out
