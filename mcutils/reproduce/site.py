"""The per-profile book: ``<out>/`` gets a copy of the book's pages and its executed notebooks, then is built.

Chapters the profile did not run (or that failed) keep the book's committed
quick-profile notebooks, and the title and footer of the built site say which
pages came from which profile.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import yaml

from .common import ReproduceError
from .profiles import Profile
from .toc import SCORECARD, toc_notebooks


def output_dir_for(root: Path, profile: Profile, output_dir: str | None) -> Path:
    """``--output-dir``, else ``reproductions/<profile>/``; never the book's own pages."""
    out = Path(output_dir).resolve() if output_dir else root / "reproductions" / profile.name
    book = (root / "book").resolve()
    if out == root or out == book or book in out.parents:
        raise ReproduceError(f"--output-dir {out} would write into the book's own pages; pick a folder "
                             f"outside book/ (the default is reproductions/<profile>/)")
    return out


def prepare_profile_book(root: Path, out: Path) -> None:
    """Copy the book's pages, configuration and profiles into ``out``; executed notebooks stay."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, out / name)
    if (root / "profiles").is_dir():
        shutil.copytree(root / "profiles", out / "profiles", dirs_exist_ok=True)
    skip = {"_build", ".ipynb_checkpoints", "__pycache__"}
    for src in (root / "book").rglob("*"):
        rel = src.relative_to(root)
        if any(part in skip for part in rel.parts) or src.is_dir() or src.suffix == ".ipynb":
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out / rel)


def fill_missing_notebooks(root: Path, out: Path, produced: Iterable[str] = ()) -> list[str]:
    """Notebooks this profile has not (successfully) run keep the book's committed ones.

    Returns the chapters whose pages in ``out`` carry the book's outputs rather than this profile's.
    """
    produced = set(produced)
    borrowed = []
    for page in toc_notebooks(root):
        target = out / f"{page.doc}.ipynb"
        if not target.exists() and page.source(root).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(page.source(root), target)
        if page.name != SCORECARD and target.exists() and page.name not in produced:
            borrowed.append(page.name)
    return borrowed


def write_profile_config(out: Path, profile: Profile, produced: list[str], borrowed: list[str]) -> None:
    """Title and footer of the profile's book say which profile produced which pages."""
    config = yaml.safe_load((out / "_config.yml").read_text(encoding="utf-8")) or {}
    config["title"] = f"{config.get('title', 'Book')} ({profile.name} profile)"
    html = config.setdefault("html", {})
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    footer = (f"Built {date} by <code>python -m mcutils.reproduce --profile {profile.name}</code>. "
              f"Outputs produced by the {profile.name} profile: {', '.join(produced) or 'none'}.")
    if borrowed:
        footer += f" Pages not run in this profile carry the book's quick-profile outputs: {', '.join(borrowed)}."
    html["extra_footer"] = f"<p>{footer} Each chapter's first output names its profile.</p>"
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")


def jupyter_book_executable() -> str:
    """The ``jupyter-book`` beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "jupyter-book"
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if not found:
        raise ReproduceError("jupyter-book is not installed (pip install 'mcutils[book]')")
    return found


def build_book(out: Path, log: Path) -> bool:
    """``jupyter-book build`` of the profile's folder, failing on any warning."""
    cmd = [jupyter_book_executable(), "build", str(out), "-W", "-n", "--keep-going"]
    with open(log, "wb") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    text = log.read_text(encoding="utf-8", errors="replace")
    return done.returncode == 0 and "WARNING" not in text and "ERROR" not in text
