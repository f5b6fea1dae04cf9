"""The book's table of contents: the checkout, its pages in reading order, the chapters.

Everything the runner does follows ``_toc.yml``: a document with a ``.md``
source is a page of prose, every other entry a notebook; the notebook named
:data:`SCORECARD` gathers the others' claims and is not a chapter.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..runs import repo_root
from .common import ReproduceError

SCORECARD = "scorecard"
# What a checkout of the book has and the installed package lacks.
CHECKOUT_MARKERS = ("_toc.yml", "book/")


@dataclass(frozen=True)
class Page:
    """A notebook of the table of contents: ``doc`` is its path without suffix (``book/03_gaussian``)."""

    doc: str

    @property
    def name(self) -> str:
        return Path(self.doc).name

    def source(self, root: Path) -> Path:
        return root / f"{self.doc}.ipynb"


def _missing(path: Path) -> list[str]:
    """Which of :data:`CHECKOUT_MARKERS` ``path`` lacks (a name ending in ``/`` is a folder)."""
    return [m for m in CHECKOUT_MARKERS
            if not ((path / m[:-1]).is_dir() if m.endswith("/") else (path / m).is_file())]


def find_root(root: str | os.PathLike | None = None) -> Path:
    """The book's checkout: ``root`` if given, else the one mcutils runs from, else the working directory.

    A checkout has ``_toc.yml`` and ``book/``; the package pip installs (on
    Colab, say) has neither, and the batch runner cannot work from it.
    """
    candidates = [Path(root)] if root else [p for p in (repo_root(), Path.cwd()) if p is not None]
    for path in candidates:
        if not _missing(path):
            return path.resolve()
    where = Path(root) if root else Path.cwd()
    missing = _missing(where)
    raise ReproduceError(f"{where} is not a checkout of the book (no {' and no '.join(missing)}): this command "
                         "needs the book's _toc.yml, book/ and profiles/, which the installed mcutils package "
                         "does not carry; run it in a clone of the book's repository or pass --root CLONE")


def toc_docs(root: Path) -> list[str]:
    """Every document of ``_toc.yml`` in reading order (the root first), without suffixes."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")) or {}
    docs: list[str] = []

    def walk(node):
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            if "file" in node:
                docs.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key) or [])

    if "root" in toc:
        docs.append(str(toc["root"]))
    walk(toc)
    return [re.sub(r"\.(ipynb|md)$", "", d) for d in docs]


def toc_notebooks(root: Path) -> list[Page]:
    """The notebook pages of the table of contents (chapters and the scorecard), in order.

    A document with a ``.md`` source is a page of prose; every other entry is a
    notebook, whether or not its file exists yet (a missing one is reported).
    """
    return [Page(d) for d in toc_docs(root) if not (root / f"{d}.md").is_file()]


def toc_chapters(root: Path) -> list[Page]:
    """The chapters: the notebook pages other than the scorecard."""
    return [p for p in toc_notebooks(root) if p.name != SCORECARD]


def select_pages(pages: list[Page], wanted: str | None) -> list[Page]:
    """Chapters named in ``--chapters`` (comma-separated names, or unique prefixes such as ``03``)."""
    if not wanted:
        return pages
    chosen: list[Page] = []
    for item in [w.strip() for w in wanted.split(",") if w.strip()]:
        matches = [p for p in pages if p.name == item] or [p for p in pages if p.name.startswith(item)]
        if len(matches) != 1:
            names = [p.name for p in pages]
            problem = "matches no chapter" if not matches else f"is ambiguous ({[p.name for p in matches]})"
            raise ReproduceError(f"--chapters: {item!r} {problem}; chapters in _toc.yml: {names}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return [p for p in pages if p in chosen]  # reading order
