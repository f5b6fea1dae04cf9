"""What every chapter does first: check the profile, set the style, say who produced the outputs."""
from __future__ import annotations

import platform

from . import __version__, plotting, validate

PROFILES = ("quick", "paper", "custom")


def start_chapter(chapter: str, profile: str = "quick", *, seed: int = 0, device: str = "cpu") -> None:
    """Validate the shared parameters, apply the house style and print the banner.

    The banner tells a reader which profile produced the page's outputs.
    """
    validate.choice("profile", profile, PROFILES)
    validate.non_negative_int("seed", seed)
    plotting.use_style()
    print(f"{chapter} | profile: {profile} | seed: {seed} | device: {device} | "
          f"mcutils {__version__} | Python {platform.python_version()}")
