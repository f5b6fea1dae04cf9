"""Keep every chapter's Colab install cell in step with the book's address and version.

The first code cell of each notebook in ``_toc.yml`` is tagged
``colab-install``.  On Colab it installs this package from the book's own
repository at the book's version tag (``v<version>`` of ``pyproject.toml``),
so a chapter opened from GitHub runs the mcutils it was written for; anywhere
else it does nothing (offline CI must not try).  The repository address comes
from ``repository.url`` in ``_config.yml``, the one place it is written.

``python -m mcutils.colab --check`` lists the notebooks whose cell is out of
step (exit 1); ``--write`` rewrites those cells, leaving everything else of the
notebook as it was.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from .reproduce import ReproduceError, find_root, toc_notebooks

TAG = "colab-install"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def repository_url(root: Path) -> str:
    """``repository.url`` of ``_config.yml``, without a trailing slash or ``.git``."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    url = str((config.get("repository") or {}).get("url") or "").strip()
    if not re.fullmatch(r"https://[^\s\"']+", url):
        raise ReproduceError(f"_config.yml: repository.url must be an https address, got {url!r}")
    return re.sub(r"(\.git)?/*$", "", url)


def book_version(root: Path) -> str:
    """The ``[project] version`` of ``pyproject.toml`` (the book's version; tags are ``v<version>``)."""
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def install_cell_source(root: Path) -> str:
    """The exact text of the ``colab-install`` cell for this checkout."""
    spec = f"mcutils @ git+{repository_url(root)}@v{book_version(root)}"
    return ("# Running on Colab? Install the book's package (does nothing elsewhere).\n"
            "import sys\n"
            'if "google.colab" in sys.modules:\n'
            f'    %pip install -q "{spec}"')


def _install_cell(nb: dict) -> tuple[int | None, str]:
    """Index of the first code cell if it is tagged ``colab-install``, else None and why."""
    code = [i for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]
    if not code:
        return None, "has no code cell"
    first = nb["cells"][code[0]]
    if TAG not in first.get("metadata", {}).get("tags", []):
        tagged = [i for i in code if TAG in nb["cells"][i].get("metadata", {}).get("tags", [])]
        return None, ("its first code cell is not the one tagged 'colab-install'" if tagged
                      else "has no cell tagged 'colab-install'")
    return code[0], ""


def problems(root: Path) -> dict[str, str]:
    """Notebook (relative path) → what is wrong with its install cell; empty when all are in step."""
    expected = install_cell_source(root)
    found: dict[str, str] = {}
    for page in toc_notebooks(root):
        path = page.source(root)
        if not path.is_file():
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        index, why = _install_cell(nb)
        rel = f"{page.doc}.ipynb"
        if index is None:
            found[rel] = why
        elif "".join(nb["cells"][index]["source"]) != expected:
            found[rel] = "the install cell differs from the one _config.yml and pyproject.toml give"
    return found


def write(root: Path) -> list[str]:
    """Rewrite the out-of-step install cells; returns the notebooks changed.

    A notebook without a tagged first code cell is not guessed at: that is an error.
    """
    import nbformat
    expected = install_cell_source(root)
    changed = []
    for rel, why in problems(root).items():
        path = root / rel
        nb = nbformat.read(path, as_version=4)
        index, why = _install_cell(nb)
        if index is None:
            raise ReproduceError(f"{rel} {why}; add the cell by hand (see CONTRIBUTING.md)")
        nb.cells[index].source = expected
        nbformat.write(nb, path)
        changed.append(rel)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcutils.colab", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report notebooks whose install cell is out of step")
    mode.add_argument("--write", action="store_true", help="rewrite the install cells that are out of step")
    parser.add_argument("--root", help="the book's checkout (default: the one mcutils runs from, or .)")
    args = parser.parse_args(argv)
    try:
        root = find_root(args.root)
        if args.write:
            changed = write(root)
            print("\n".join(f"updated {rel}" for rel in changed) or "every install cell is in step")
            return 0
        found = problems(root)
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rel, why in found.items():
        print(f"{rel}: {why}")
    if found:
        print("run `python -m mcutils.colab --write` to bring them in step", file=sys.stderr)
        return 1
    print("every install cell is in step with _config.yml and pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
