"""One house style for every figure of the book."""
from __future__ import annotations

import numpy as np

PALETTE = {
    "replace": "#c0392b",
    "accumulate": "#2471a3",
    "accumulate-subsample": "#229954",
    "replace-grown": "#d68910",  # linear regression's grown-synthetic control
    "real": "#7f8c8d",
    "theory": "#000000",
}
CYCLE = ["#2471a3", "#c0392b", "#229954", "#d68910", "#7d3c98", "#17a589", "#5d6d7e"]


def use_style() -> None:
    """Apply the book's matplotlib style (call once per chapter)."""
    import matplotlib as mpl
    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "axes.prop_cycle": mpl.cycler(color=CYCLE),
        "image.cmap": "viridis",
    })


def band(ax, x, runs, *, label=None, color=None, quantiles=(0.1, 0.9), alpha=0.2, **kwargs):
    """Plot the mean over runs (axis 0) with a quantile band; returns the line."""
    runs = np.asarray(runs, dtype=float)
    if runs.ndim == 1:
        runs = runs[None, :]
    mean = np.nanmean(runs, axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color, **kwargs)
    if runs.shape[0] > 1:
        lo, hi = np.nanquantile(runs, quantiles, axis=0)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return line


def policy_color(name: str) -> str | None:
    return PALETTE.get(name)
