"""Claims a chapter tests, recorded for the scorecard.

A chapter builds a :class:`Claims` for itself, adds each claim it checks
(the paper's value, ours, whether it holds and the profile that produced
ours), and ends with ``claims.show()``.  ``show`` displays a table and stores
the same records in the output's metadata under ``"mcutils_claims"``, so the
scorecard gathers them from the executed notebooks of whatever profile was
run, with no side files to keep in step.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

METADATA_KEY = "mcutils_claims"

# The tolerance, in standard errors, of every check of a simulation against its closed form (the
# chapters and the tests): a correct simulation fails one such check with probability below 1e-5
# (two-sided normal tail at 4.5: 6.8e-6).
Z = 4.5


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0 or math.isnan(value):
            return f"{value:g}"
        if abs(value) >= 1000 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


@dataclass
class Claim:
    chapter: str
    claim: str
    paper: str
    ours: str
    holds: bool
    profile: str
    note: str = ""


class Claims:
    """The claims one chapter tests, in the order it tests them."""

    def __init__(self, chapter: str, profile: str):
        self.chapter = chapter
        self.profile = profile
        self.records: list[Claim] = []

    def add(self, claim: str, *, paper, ours, holds: bool, note: str = "") -> Claim:
        """Record one claim; ``paper`` and ``ours`` are shown as given (numbers rounded)."""
        record = Claim(self.chapter, claim, _fmt(paper), _fmt(ours), bool(holds), self.profile, note)
        self.records.append(record)
        return record

    def check(self, claim: str, *, paper, ours, holds: bool, note: str = "") -> Claim:
        """Record a claim and assert that it holds (the chapter fails otherwise)."""
        record = self.add(claim, paper=paper, ours=ours, holds=holds, note=note)
        if not record.holds:  # not `assert`: python -O must not skip a chapter's checks
            raise AssertionError(f"claim does not hold: {claim} (paper: {record.paper}, ours: {record.ours})")
        return record

    def to_markdown(self) -> str:
        return markdown_table(self.records, with_chapter=False)

    def show(self):
        """Display the table and attach the records for the scorecard."""
        from IPython.display import display
        payload = {
            "text/markdown": self.to_markdown(),
            "text/plain": self.to_markdown(),
        }
        display(payload, raw=True,
                metadata={METADATA_KEY: [asdict(r) for r in self.records]})


def markdown_table(records: Iterable[Claim], with_chapter: bool = True) -> str:
    """The claims as a markdown table; the "holds" column says "yes" or a bold "no" in words, which any
    font shows (an emoji mark needs an emoji font)."""
    head = ["claim", "paper", "this book", "holds", "profile"]
    if with_chapter:
        head = ["chapter", *head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        row = [r.claim, r.paper, r.ours, "yes" if r.holds else "**no**", r.profile]
        if with_chapter:
            row = [r.chapter, *row]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def gather(notebooks: Iterable[str | Path]) -> list[Claim]:
    """Read the claims recorded in executed notebooks (their output metadata)."""
    found: list[Claim] = []
    for path in notebooks:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            for output in cell.get("outputs", []) or []:
                for rec in output.get("metadata", {}).get(METADATA_KEY, []) or []:
                    found.append(Claim(**rec))
    return found


# -- key numbers: what `make test` compares, each with a measured tolerance -----------------

NUMBERS_KEY = "mcutils_numbers"
TOLERANCES_FILE = "book/_tolerances.json"


@dataclass
class KeyNumber:
    chapter: str
    name: str
    what: str
    value: float
    tolerance: float | None  # absolute; None: not measured for this profile
    basis: str
    profile: str


def load_tolerances(chapter: str, root: Path | None = None) -> dict:
    """The measured tolerances of one chapter's key numbers (``book/_tolerances.json``), or {}.

    The file is written by ``make tolerances`` (``tools/measure_tolerances.py``);
    outside a checkout (a notebook alone on Colab) there is none.
    """
    if root is None:
        from .runs import repo_root
        root = repo_root()
    if root is None or not (Path(root) / TOLERANCES_FILE).is_file():
        return {}
    data = json.loads((Path(root) / TOLERANCES_FILE).read_text(encoding="utf-8"))
    return data.get("chapters", {}).get(chapter, {})


class KeyNumbers:
    """The numbers of a chapter that regression checks compare, each shown with its tolerance.

    Torch training rounds differently on every CPU kernel path and thread
    count, so a torch-trained number cannot be compared digit for digit
    between the machine that executed a notebook and the one that tests it.
    Each key number is instead stored in the output's metadata under
    ``"mcutils_numbers"`` with an absolute tolerance measured by re-running the
    chapter under several kernel paths and thread counts (the quick profile
    only); ``make test`` re-executes the chapter on another kernel path and
    fails when a number moves by more than its tolerance.
    """

    def __init__(self, chapter: str, profile: str, tolerances: dict | None = None):
        self.chapter = chapter
        self.profile = profile
        self.tolerances = load_tolerances(chapter) if tolerances is None and profile == "quick" else (tolerances or {})
        self.records: list[KeyNumber] = []

    def add(self, name: str, value, *, what: str) -> float:
        """Record ``value`` under ``name`` (a stable identifier) with a description for the reader."""
        value = float(value)
        if any(r.name == name for r in self.records):
            raise ValueError(f"key number {name!r} recorded twice in {self.chapter}")
        measured = self.tolerances.get(name) if self.profile == "quick" else None
        tolerance = None if measured is None else float(measured["tolerance"])
        basis = measured["basis"] if measured else ("not measured: run `make tolerances`" if self.profile == "quick"
                                                   else f"tolerances are measured for the quick profile only")
        self.records.append(KeyNumber(self.chapter, name, what, value, tolerance, basis, self.profile))
        return value

    def to_markdown(self) -> str:
        lines = ["| key number | value | tolerance (±) | how the tolerance was measured |", "|---|---|---|---|"]
        for r in self.records:
            tol = "—" if r.tolerance is None else _fmt(r.tolerance)
            lines.append("| " + " | ".join(s.replace("|", "\\|") for s in (r.what, _fmt(r.value), tol, r.basis)) + " |")
        return "\n".join(lines)

    def show(self):
        """Display the table and attach the records for ``make test``."""
        from IPython.display import display
        text = self.to_markdown()
        display({"text/markdown": text, "text/plain": text}, raw=True,
                metadata={NUMBERS_KEY: [asdict(r) for r in self.records]})


def numbers_in(outputs) -> list[KeyNumber]:
    """The key numbers recorded in a cell's outputs (committed or freshly executed)."""
    found = []
    for output in outputs or []:
        for rec in (output.get("metadata") or {}).get(NUMBERS_KEY, []) or []:
            found.append(KeyNumber(**rec))
    return found


def gather_numbers(notebook: str | Path) -> list[KeyNumber]:
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    return [n for cell in nb.get("cells", []) for n in numbers_in(cell.get("outputs"))]


# -- provenance: what produced a notebook's outputs ----------------------------------------

PROVENANCE_KEY = "mcutils_provenance"


def code_versions() -> dict:
    """The versions of everything whose change alters a chapter's numbers (compared by ``make test``)."""
    from . import __version__
    from .lm.model import CACHE_FORMAT
    from .lm.settings import ENGINE_VERSION
    return {"mcutils": __version__, "lm_engine": ENGINE_VERSION, "tiny_model_cache": CACHE_FORMAT}


def provenance_in(notebook: str | Path) -> dict | None:
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            record = (output.get("metadata") or {}).get(PROVENANCE_KEY)
            if record:
                return record
    return None
