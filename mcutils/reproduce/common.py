"""What every part of the batch runner shares: its error and how it writes durations and paths."""
from __future__ import annotations

from pathlib import Path


class ReproduceError(Exception):
    """A problem with the checkout, the profile, the chapter list or the options, found before any work."""


def fmt_seconds(seconds: float) -> str:
    """``8.5 s``, ``42 s``, ``3 min 05 s``, ``2 h 10 min``."""
    seconds = float(seconds)
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def relative(path: Path, root: Path) -> str:
    """``path`` relative to the checkout when it lies inside it, else as given."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
