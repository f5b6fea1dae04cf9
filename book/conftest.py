"""nbval over the chapters, as if on another machine, and the key numbers within their tolerances.

- stderr (progress bars, library warnings) and images are never compared.
- Every kernel nbval starts runs on another CPU kernel path and thread count
  than ``make book`` (``TEST_CONFIG`` of ``tools/measure_tolerances.py``: torch's
  AVX2 kernels, MKL and oneDNN held to SSE4, 2 torch threads; a combination
  the tolerances were not measured on), with a fresh runs folder and
  model cache, so the torch-trained chapters are recomputed, not read back.
- A cell whose committed outputs carry key numbers (``mcutils.results.KeyNumbers``)
  fails when a re-executed number leaves its measured tolerance.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools")]

from keynumbers import deviations  # noqa: E402
from measure_tolerances import TEST_CONFIG  # noqa: E402

from mcutils import results  # noqa: E402
from mcutils.book import THREADS_ENV  # noqa: E402

_SCRATCH = None


def other_machine_env() -> dict:
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.mkdtemp(prefix="mcutils-nbval-")
    return {**TEST_CONFIG["env"], THREADS_ENV: str(TEST_CONFIG["threads"]),
            "MCUTILS_RUNS_DIR": os.path.join(_SCRATCH, "runs"), "MCUTILS_CACHE_DIR": os.path.join(_SCRATCH, "cache")}


def pytest_collectstart(collector):
    path = getattr(collector, "path", None)
    if path is not None and str(path).endswith(".ipynb"):
        collector.skip_compare += ("stderr", "text/html", "application/javascript",
                                   "application/vnd.jupyter.widget-view+json", "image/png")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """The notebook's kernel starts during its first cell's setup: give it the other machine's environment."""
    notebook = item.parent
    if not (str(getattr(notebook, "path", "")).endswith(".ipynb") and getattr(notebook, "kernel", 1) is None):
        return (yield)
    saved = {k: os.environ.get(k) for k in other_machine_env()}
    os.environ.update(other_machine_env())
    try:
        return (yield)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    outcome = yield  # nbval's own run and exact comparison of the NBVAL_CHECK_OUTPUT cells
    committed = results.numbers_in(getattr(getattr(item, "cell", None), "outputs", None))
    if committed:
        failures = deviations(committed, results.numbers_in(item.test_outputs))
        if failures:
            pytest.fail("key numbers outside their measured tolerances:\n" + "\n".join(failures), pytrace=False)
    return outcome
