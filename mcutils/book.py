"""What every chapter does first, in one call: :func:`start_chapter`.

It validates the parameters every chapter shares, applies the house style,
sets torch's threads and resolves the device and the runs folder for the
chapters that train, prints the banner naming the profile that produced the
page, records the same facts (with the versions of the code) in the output's
metadata, and hands back what the chapter needs: its :class:`Chapter`, with
the chapter's :class:`~mcutils.results.Claims` and
:class:`~mcutils.results.KeyNumbers`.  A chapter's setup cell keeps only the
checks of its own parameters.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from . import __version__, plotting, validate
from .results import PROVENANCE_KEY, Claims, KeyNumbers, code_versions

PROFILES = ("quick", "paper", "custom")
THREADS_ENV = "MCUTILS_TORCH_THREADS"  # overrides a chapter's cpu_threads (the test suite's "other machine")


@dataclass
class Chapter:
    """What :func:`start_chapter` resolved for one chapter."""

    name: str               # the chapter's file name without .ipynb, e.g. "05_vae"
    profile: str
    seed: int
    device: str             # "cpu", "cuda", "mps"; "cpu" for the numpy chapters
    runs_dir: Path | None   # where trained generations are kept (None: the chapter keeps nothing)
    threads: int | None     # torch's CPU threads (None: the chapter does not use torch)
    claims: Claims
    numbers: KeyNumbers


def torch_threads(cpu_threads: int) -> int:
    """Set torch's CPU thread count and return it.

    ``cpu_threads`` is the chapter's parameter (0: torch's default).  The
    environment variable ``MCUTILS_TORCH_THREADS``, when set, wins: ``make
    test`` uses it to re-execute the chapters with another thread count than
    the one that produced the committed outputs.
    """
    import torch

    override = os.environ.get(THREADS_ENV, "").strip()
    if override:
        cpu_threads = validate.positive_int(THREADS_ENV, int(override) if override.isdigit() else override)
    validate.non_negative_int("cpu_threads", cpu_threads)
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    return torch.get_num_threads()


def machine() -> dict:
    """What a torch-trained number depends on besides the code: kernel path, threads, library versions."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    torch = sys.modules.get("torch")  # a chapter that does not train with torch does not pay for its import
    if torch is None:
        return out
    out.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
               cpu_capability=torch.backends.cpu.get_cpu_capability())
    for name in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA"):
        if os.environ.get(name):
            out[name] = os.environ[name]
    return out


def start_chapter(name: str, *, profile: str = "quick", seed: int = 0, device: str | None = None,
                  runs_dir: str | os.PathLike | None = None, cpu_threads: int | None = None) -> Chapter:
    """Validate the shared parameters, set the chapter up and print its banner.

    ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``), ``runs_dir`` and
    ``cpu_threads`` are given only by the chapters that train with torch; the
    numpy chapters compute on the CPU.  ``runs_dir`` empty means
    ``runs/<profile>`` in the checkout (:func:`mcutils.runs.resolve_runs_dir`);
    it must be a writable folder with room, checked here before any work.
    The banner tells a reader which profile produced the page's outputs; the
    same facts with the code's versions (:func:`mcutils.results.code_versions`)
    ride in the output's metadata under ``"mcutils_provenance"``, where ``make
    test`` checks that the committed notebooks were executed by the code as it is.
    """
    from IPython.display import display

    from . import runs

    validate.choice("profile", profile, PROFILES)
    validate.seed("seed", seed)
    resolved = "cpu" if device is None else validate.resolve_device(device)
    threads = torch_threads(validate.non_negative_int("cpu_threads", cpu_threads)) \
        if cpu_threads is not None and resolved == "cpu" else None
    folder = None
    if runs_dir is not None:
        folder = runs.check_writable_dir(runs.resolve_runs_dir(runs_dir, profile), "runs_dir")
    plotting.use_style()
    shown = resolved if device is not None else "cpu (numpy)"
    banner = (f"{name} | profile: {profile} | seed: {seed} | device: {shown}"
              + (f" | torch threads: {threads}" if threads is not None else "")
              + f" | mcutils {__version__} | Python {platform.python_version()}")
    record = {"chapter": name, "profile": profile, "seed": seed, "device": resolved,
              **code_versions(), **machine()}
    display({"text/plain": banner}, raw=True, metadata={PROVENANCE_KEY: record})
    return Chapter(name, profile, seed, resolved, folder, threads, Claims(name, profile), KeyNumbers(name, profile))
