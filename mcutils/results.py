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
    head = ["claim", "paper", "this book", "holds", "profile"]
    if with_chapter:
        head = ["chapter", *head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        row = [r.claim, r.paper, r.ours, "✅" if r.holds else "❌", r.profile]
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
