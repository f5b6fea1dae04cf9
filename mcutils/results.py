"""Claims a chapter tests, recorded for the scorecard.

A chapter builds a :class:`Claims` for itself, records each claim it tests
(the paper's value, ours, whether it holds and the profile that produced
ours), and ends with ``claims.show()``.  ``show`` displays a table and stores
the same records in the output's metadata under ``"mcutils_claims"``, so the
scorecard gathers them from the executed notebooks of whatever profile was
run, with no side files to keep in step.

A claim is recorded in one of two ways: ``claims.check`` asserts it (the
chapter stops if it does not hold), ``claims.add`` only records it (it is
shown holding or not).  Each claim is either a statement of one of the papers
(kind ``"paper"``, naming the item of ``book/_paper_items.json`` it tests) or
one of the book's own consistency checks (kind ``"own"``); the scorecard
reports every paper item's status (:func:`item_status`) and keeps the own
checks apart.

A profile whose numbers mean nothing (``profiles/paper-smoke.yaml``: the
paper profile's code on random weights and generated data) sets
``assert_claims: false``; the batch runner then sets
``MCUTILS_ASSERT_CLAIMS=0`` for its chapters, and ``check`` records a claim
that does not hold without stopping the chapter, so that every later cell
still runs.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

METADATA_KEY = "mcutils_claims"
ASSERT_CLAIMS_ENV = "MCUTILS_ASSERT_CLAIMS"  # "0": check() records a failing claim without raising

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


KINDS = ("paper", "own")


@dataclass
class Claim:
    """One recorded claim.

    ``asserted`` is True for a claim recorded by :meth:`Claims.check` (the
    chapter stops when it fails) and False for :meth:`Claims.add` (recorded
    and shown, holding or not).  ``kind`` is ``"paper"`` for a statement of
    one of the papers compared with ours, ``"own"`` for one of the book's own
    consistency checks (a simulator against its closed form, an estimator's
    unbiasedness, the shares a policy mixes, a stand-in's fitness).  ``item``
    is the id, in ``book/_paper_items.json``, of the paper item that a
    ``"paper"`` claim tests ("" when none is named).

    Records written before these three fields existed are read with their
    defaults: not asserted (nothing says they were), kind ``"paper"``, no item.
    """

    chapter: str
    claim: str
    paper: str
    ours: str
    holds: bool
    profile: str
    note: str = ""
    asserted: bool = False
    kind: str = "paper"
    item: str = ""

    @classmethod
    def from_record(cls, record: dict) -> "Claim":
        """A claim from its stored record (a notebook's metadata), old or new.

        Missing fields take their defaults; fields this version does not know
        (written by a newer one) are ignored.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


class Claims:
    """The claims one chapter tests, in the order it tests them."""

    def __init__(self, chapter: str, profile: str):
        self.chapter = chapter
        self.profile = profile
        self.records: list[Claim] = []

    def _record(self, claim: str, paper, ours, holds: bool, note: str, asserted: bool, kind: str,
                item: str) -> Claim:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(item, str):
            raise TypeError(f"item must be a string (an id of book/_paper_items.json), got {item!r}")
        if kind == "own" and item:
            raise ValueError(f"an own check tests no paper item: claim {claim!r} has kind='own' and item={item!r}")
        record = Claim(self.chapter, claim, _fmt(paper), _fmt(ours), bool(holds), self.profile, note,
                       asserted=asserted, kind=kind, item=item)
        self.records.append(record)
        return record

    def add(self, claim: str, *, paper, ours, holds: bool, note: str = "", kind: str = "paper",
            item: str = "") -> Claim:
        """Record one claim without asserting it (``asserted=False``): it is shown holding or not.

        ``paper`` and ``ours`` are shown as given (numbers rounded); ``kind``
        is ``"paper"`` or ``"own"`` and ``item`` the id of the paper item the
        claim tests (see :class:`Claim`).
        """
        return self._record(claim, paper, ours, holds, note, False, kind, item)

    def check(self, claim: str, *, paper, ours, holds: bool, note: str = "", kind: str = "paper",
              item: str = "") -> Claim:
        """Record a claim (``asserted=True``) and raise if it does not hold: the chapter fails then
        (unless ``MCUTILS_ASSERT_CLAIMS=0``, set by the runner for a profile with ``assert_claims: false``)."""
        record = self._record(claim, paper, ours, holds, note, True, kind, item)
        # not `assert`: python -O must not skip a chapter's checks
        if not record.holds and os.environ.get(ASSERT_CLAIMS_ENV, "1").strip() != "0":
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


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _mark(holds: bool) -> str:
    return "yes" if holds else "**no**"


def _how(claim: Claim) -> str:
    return "asserted" if claim.asserted else "recorded"


def markdown_table(records: Iterable[Claim], with_chapter: bool = True, with_item: bool = False) -> str:
    """The claims as a markdown table.

    The "holds" column says "yes" or a bold "no" in words, which any font
    shows (an emoji mark needs an emoji font); the next column says whether
    the claim was "asserted" (``Claims.check``: the chapter stops if it fails)
    or only "recorded" (``Claims.add``).  ``with_item`` adds the paper item
    each claim tests.
    """
    head = ["claim", "paper", "this book", "holds", "asserted or recorded", "profile"]
    if with_item:
        head = ["item", *head]
    if with_chapter:
        head = ["chapter", *head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        row = [r.claim, r.paper, r.ours, _mark(r.holds), _how(r), r.profile]
        if with_item:
            row = [r.item or "-", *row]
        if with_chapter:
            row = [r.chapter, *row]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def gather(notebooks: Iterable[str | Path]) -> list[Claim]:
    """Read the claims recorded in executed notebooks (their output metadata), old records included."""
    found: list[Claim] = []
    for path in notebooks:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            for output in cell.get("outputs", []) or []:
                for rec in (output.get("metadata") or {}).get(METADATA_KEY, []) or []:
                    found.append(Claim.from_record(rec))
    return found


# -- paper items: every figure and quantitative claim of the two papers -------------------

PAPER_ITEMS_FILE = "book/_paper_items.json"
PAPERS = {"shumailov2024": "Shumailov et al. 2024", "gerstgrasser2024": "Gerstgrasser et al. 2024"}
SCALES = ("paper", "stand-in")
STATUSES = ("reproduced", "partly reproduced", "not reproduced", "not run in this profile", "not attempted")


def load_paper_items(path: str | Path | None = None) -> list[dict]:
    """The paper items of ``book/_paper_items.json`` (or of ``path``), checked; [] outside a checkout.

    Each item has ``id``, ``paper`` (a key of :data:`PAPERS`), ``what``,
    ``paper_value``, ``chapter`` (the stem of the chapter that tests it, ""
    if none does), ``scale`` (``"paper"`` or ``"stand-in"``; "" when no
    chapter tests it) and ``note``.
    """
    if path is None:
        from .runs import repo_root
        root = repo_root()
        if root is None or not (root / PAPER_ITEMS_FILE).is_file():
            return []
        path = root / PAPER_ITEMS_FILE
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    items = data["items"] if isinstance(data, dict) else data
    seen = set()
    for item in items:
        missing = {"id", "paper", "what", "paper_value", "chapter", "scale", "note"} - set(item)
        if missing:
            raise ValueError(f"paper item {item.get('id', item)!r} lacks {sorted(missing)}")
        if item["id"] in seen:
            raise ValueError(f"paper item {item['id']!r} is listed twice")
        seen.add(item["id"])
        if item["paper"] not in PAPERS:
            raise ValueError(f"paper item {item['id']!r}: paper must be one of {sorted(PAPERS)}, got {item['paper']!r}")
        allowed = SCALES if item["chapter"] else ("",)
        if item["scale"] not in allowed:
            raise ValueError(f"paper item {item['id']!r}: scale must be one of {allowed} "
                             f"(chapter {item['chapter']!r}), got {item['scale']!r}")
    return items


def linked_claims(item: dict, claims: Iterable[Claim]) -> list[Claim]:
    """The paper claims (kind ``"paper"``) that name ``item`` by its id, from any chapter."""
    return [c for c in claims if c.kind == "paper" and c.item == item["id"]]


def item_status(item: dict, claims: Iterable[Claim]) -> str:
    """How far the book reproduces one paper item, from the claims gathered.

    The rule, applied to the paper claims that name the item (own checks
    never count):

    - "not attempted": no claim names the item and no chapter tests it
      (``item["chapter"]`` is "");
    - "not run in this profile": a chapter tests the item but no claim naming
      it was recorded in the notebooks gathered (e.g. a claim the chapter
      records only in another profile);
    - "not reproduced": claims name the item and none of them holds;
    - "reproduced": every claim naming it holds and the item's scale is
      "paper" (the profile that ran it runs the paper's own experiment);
    - "partly reproduced": otherwise: some of its claims hold but not all,
      or all hold but on a stand-in (a smaller or different model or data
      than the paper's).

    Whether a claim was asserted or only recorded does not change its
    status: a recorded claim that holds counts as holding, one that does not
    hold counts as not holding.
    """
    linked = linked_claims(item, claims)
    if not linked:
        return "not run in this profile" if item["chapter"] else "not attempted"
    holding = sum(c.holds for c in linked)
    if holding == 0:
        return "not reproduced"
    if holding == len(linked) and item["scale"] == "paper":
        return "reproduced"
    return "partly reproduced"


def status_counts(items: Iterable[dict], claims: Iterable[Claim]) -> dict[str, int]:
    """How many items have each status, in the order of :data:`STATUSES`."""
    claims = list(claims)
    counts = dict.fromkeys(STATUSES, 0)
    for item in items:
        counts[item_status(item, claims)] += 1
    return counts


def items_table(items: Iterable[dict], claims: Iterable[Claim]) -> str:
    """One row a paper item: the paper's value, ours, where and how it was tested, and its status.

    "this book" lists the values of the paper claims that name the item, each
    followed by whether it holds and whether it was asserted or recorded;
    "chapter" names the chapters of those claims (the item's own chapter when
    there are none) and "profile" the profiles that produced them.
    """
    claims = list(claims)
    head = ["item", "paper", "what", "paper's value", "this book", "chapter", "profile", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for item in items:
        linked = linked_claims(item, claims)
        if linked:
            ours = "; ".join(f"{c.ours} ({'holds' if c.holds else '**does not hold**'}, {_how(c)})" for c in linked)
            chapters = ", ".join(dict.fromkeys(c.chapter for c in linked))
            profiles = ", ".join(sorted({c.profile for c in linked}))
        else:
            ours, chapters, profiles = "-", item["chapter"] or "-", "-"
        status = item_status(item, claims)
        row = [item["id"], PAPERS[item["paper"]], item["what"], item["paper_value"] or "-", ours, chapters,
               profiles, status]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def unlinked_paper_claims(items: Iterable[dict], claims: Iterable[Claim]) -> list[Claim]:
    """Paper claims that name no item, or an item not in ``items`` (so no row of the items table shows them)."""
    ids = {item["id"] for item in items}
    return [c for c in claims if c.kind == "paper" and c.item not in ids]


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
