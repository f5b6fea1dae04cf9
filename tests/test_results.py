"""Claims a chapter tests (mcutils.results): checked, shown, and gathered back from notebooks."""
from __future__ import annotations

import ast
import json
import math
from dataclasses import asdict
from pathlib import Path

import nbformat
import pytest

from mcutils import results
from mcutils.results import METADATA_KEY, Claim, Claims, gather, item_status, markdown_table

ROOT = Path(__file__).resolve().parents[1]

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def test_check_records_a_claim_that_holds():
    claims = Claims("01_theory", "quick")
    record = claims.check("variance shrinks", paper=1, ours=0.123456, holds=True, note="M=100")
    assert record == Claim("01_theory", "variance shrinks", "1", "0.1235", True, "quick", "M=100",
                           asserted=True, kind="paper", item="")
    assert claims.records == [record]


def test_check_raises_when_a_claim_fails_and_still_records_it():
    claims = Claims("01_theory", "quick")
    with pytest.raises(AssertionError, match=r"claim does not hold: tails vanish \(paper: yes, ours: 0.5\)"):
        claims.check("tails vanish", paper=True, ours=0.5, holds=False)
    assert [r.holds for r in claims.records] == [False]
    claims.add("recorded without asserting", paper=1, ours=2, holds=False)  # add never raises
    assert len(claims.records) == 2


@pytest.mark.parametrize("value, shown", [
    (True, "yes"), (False, "no"), (0.0, "0"), (float("nan"), "nan"), (12345.678, "1.23e+04"),
    (0.000123, "0.000123"), (3.14159265, "3.142"), (-0.5, "-0.5"), (7, "7"), ("≈ 1/M", "≈ 1/M"),
])
def test_values_are_shown_rounded(value, shown):
    record = Claims("c", "quick").add("x", paper=value, ours=value, holds=True)
    assert record.paper == record.ours == shown


def test_markdown_table_escapes_pipes_and_marks_failures():
    claims = Claims("02_discrete", "paper")
    claims.add("P(a|b) = q", paper=0.5, ours=0.49, holds=True)
    claims.add("absorbed", paper=1, ours=0.9, holds=False)
    claims.check("asserted one", paper=1, ours=1, holds=True, kind="own")
    lines = claims.to_markdown().splitlines()
    assert lines[0] == "| claim | paper | this book | holds | asserted or recorded | profile |"
    assert lines[2] == "| P(a\\|b) = q | 0.5 | 0.49 | yes | recorded | paper |"
    assert lines[3] == "| absorbed | 1 | 0.9 | **no** | recorded | paper |"
    assert lines[4] == "| asserted one | 1 | 1 | yes | asserted | paper |"
    assert markdown_table(claims.records).splitlines()[2].startswith("| 02_discrete | P(a")


def test_gather_reads_the_records_from_output_metadata(tmp_path):
    records = [Claim("03_gaussian", "σ² → 0", "0", "0.001", True, "quick"),
               Claim("03_gaussian", "W2 grows", "∞", "4.2", True, "quick", "n=100")]
    nb = nbformat.v4.new_notebook()
    shown = nbformat.v4.new_code_cell("claims.show()")
    shown.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "table"},
                                            metadata={METADATA_KEY: [asdict(r) for r in records]})]
    other = nbformat.v4.new_code_cell("print(1)")
    other.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), other, shown]
    path = tmp_path / "03_gaussian.ipynb"
    nbformat.write(nb, path)
    empty = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), empty)
    assert gather([path, empty]) == records
    assert gather([empty]) == []


def test_show_attaches_the_records_to_the_output_and_gather_reads_them_back(tmp_path):
    """End to end in a real kernel: show() in a notebook, the executed file, then gather()."""
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    nb.cells = [nbformat.v4.new_code_cell(
        "from mcutils.results import Claims\n"
        "claims = Claims('99_tiny', 'quick')\n"
        "claims.check('two plus two', paper=4, ours=2 + 2, holds=2 + 2 == 4)\n"
        "claims.check('pi', paper=3.14159, ours=22 / 7, holds=abs(22 / 7 - 3.14159) < 0.01, note='tol 0.01')\n"
        "claims.show()")]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"]
    assert "| two plus two | 4 | 4 | yes | asserted | quick |" in outputs[0].data["text/markdown"]
    path = tmp_path / "99_tiny.ipynb"
    nbformat.write(nb, path)
    found = gather([path])
    assert [(r.chapter, r.claim, r.paper, r.ours, r.holds, r.note, r.asserted, r.kind, r.item) for r in found] == [
        ("99_tiny", "two plus two", "4", "4", True, "", True, "paper", ""),
        ("99_tiny", "pi", "3.142", "3.143", True, "tol 0.01", True, "paper", ""),
    ]
    assert math.isclose(float(found[1].ours), 22 / 7, rel_tol=1e-3)



# -- the fields asserted, kind and item ---------------------------------------------------

def test_check_marks_a_claim_asserted_and_add_marks_it_recorded():
    claims = Claims("01_theory", "quick")
    checked = claims.check("checked", paper=1, ours=1, holds=True)
    added = claims.add("added", paper=1, ours=2, holds=False)
    assert checked.asserted is True and added.asserted is False
    with pytest.raises(AssertionError):
        claims.check("fails", paper=1, ours=2, holds=False)
    assert claims.records[-1].asserted is True  # recorded as asserted even though it stopped the chapter


def test_kind_and_item_are_recorded_and_default_to_a_paper_claim_naming_no_item():
    claims = Claims("07_accumulate", "quick")
    plain = claims.add("plain", paper=1, ours=1, holds=True)
    own = claims.check("sampler matches", paper="-", ours="0.5 SE", holds=True, kind="own")
    linked = claims.check("replace grows", paper="c n", ours="1 SE", holds=True, item="ger-lr-replace")
    assert (plain.kind, plain.item) == ("paper", "")
    assert (own.kind, own.item) == ("own", "")
    assert (linked.kind, linked.item) == ("paper", "ger-lr-replace")
    assert asdict(linked)["item"] == "ger-lr-replace" and asdict(own)["kind"] == "own"


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kind="mine"), ValueError, "kind must be one of"),
    (dict(kind="own", item="ger-lr-replace"), ValueError, "an own check tests no paper item"),
    (dict(item=3), TypeError, "item must be a string"),
])
def test_a_bad_kind_or_item_is_refused_before_anything_is_recorded(kwargs, error, match):
    claims = Claims("01_theory", "quick")
    with pytest.raises(error, match=match):
        claims.add("x", paper=1, ours=1, holds=True, **kwargs)
    with pytest.raises(error, match=match):
        claims.check("x", paper=1, ours=1, holds=True, **kwargs)
    assert claims.records == []


def test_markdown_table_with_item_shows_each_claims_item_or_a_dash():
    claims = Claims("03_gaussian", "quick")
    claims.check("W2 grows", paper="∞", ours=2.5, holds=True, item="shu-thm31-w2")
    claims.add("unnamed", paper=1, ours=1, holds=True)
    lines = markdown_table(claims.records, with_item=True).splitlines()
    assert lines[0] == "| chapter | item | claim | paper | this book | holds | asserted or recorded | profile |"
    assert lines[2] == "| 03_gaussian | shu-thm31-w2 | W2 grows | ∞ | 2.5 | yes | asserted | quick |"
    assert lines[3] == "| 03_gaussian | - | unnamed | 1 | 1 | yes | recorded | quick |"


def _notebook_with_records(path, records):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("claims.show()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "table"},
                                           metadata={METADATA_KEY: records})]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def test_gather_reads_records_written_before_asserted_kind_and_item_existed(tmp_path):
    old = {"chapter": "02_discrete_chain", "claim": "absorbed", "paper": "1", "ours": "1", "holds": True,
           "profile": "quick", "note": ""}
    oldest = {k: v for k, v in old.items() if k != "note"}  # a record from before notes, too
    found = gather([_notebook_with_records(tmp_path / "old.ipynb", [old, oldest])])
    assert [(c.asserted, c.kind, c.item, c.note) for c in found] == [(False, "paper", "", "")] * 2
    assert found[0].claim == "absorbed" and found[0].holds is True


def test_gather_ignores_fields_that_a_newer_version_wrote(tmp_path):
    record = asdict(Claim("01_theory", "c", "1", "1", True, "quick", asserted=True, kind="own"))
    found = gather([_notebook_with_records(tmp_path / "new.ipynb", [{**record, "confidence": 0.9}])])
    assert found == [Claim("01_theory", "c", "1", "1", True, "quick", asserted=True, kind="own")]


def test_gather_round_trips_the_new_fields(tmp_path):
    claims = Claims("07_accumulate", "paper")
    claims.check("a", paper=1, ours=1, holds=True, item="ger-lr-accumulate")
    claims.add("b", paper=1, ours=2, holds=False, kind="own")
    path = _notebook_with_records(tmp_path / "07_accumulate.ipynb", [asdict(r) for r in claims.records])
    assert gather([path]) == claims.records


# -- the status of a paper item ------------------------------------------------------------

def _item(chapter="03_gaussian", scale="paper", id="shu-thm31-w2"):
    return {"id": id, "paper": "shumailov2024", "what": "W2 grows", "paper_value": "∞", "chapter": chapter,
            "scale": scale, "note": ""}


def _claim(holds=True, item="shu-thm31-w2", kind="paper", asserted=True, chapter="03_gaussian"):
    return Claim(chapter, "c", "p", "o", holds, "quick", asserted=asserted, kind=kind, item=item)


@pytest.mark.parametrize("item, claims, status", [
    (_item(chapter="", scale=""), [], "not attempted"),
    (_item(), [], "not run in this profile"),
    (_item(), [_claim(item="another-item")], "not run in this profile"),
    (_item(), [_claim(), _claim(asserted=False)], "reproduced"),
    (_item(), [_claim(), _claim(holds=False, asserted=False)], "partly reproduced"),
    (_item(scale="stand-in"), [_claim(), _claim()], "partly reproduced"),
    (_item(scale="stand-in"), [_claim(holds=False, asserted=False)], "not reproduced"),
    (_item(), [_claim(holds=False, asserted=False), _claim(holds=False, asserted=False)], "not reproduced"),
])
def test_item_status_follows_the_rule_of_its_docstring(item, claims, status):
    assert item_status(item, claims) == status


def test_own_checks_never_count_towards_an_items_status():
    # an own check cannot name an item through Claims; a record that does (edited by hand) is still ignored
    own = _claim(kind="own")
    assert item_status(_item(), [own]) == "not run in this profile"
    assert item_status(_item(), [own, _claim(holds=False)]) == "not reproduced"


def test_claims_from_any_chapter_count_for_an_item():
    linked = [_claim(chapter="01_theory"), _claim(chapter="03_gaussian", holds=False)]
    assert item_status(_item(), linked) == "partly reproduced"
    assert results.linked_claims(_item(), linked) == linked


def test_status_counts_cover_every_status_in_order():
    items = [_item(), _item(id="b", chapter="", scale=""), _item(id="c")]
    counts = results.status_counts(items, [_claim()])
    assert list(counts) == list(results.STATUSES)
    assert counts == {"reproduced": 1, "partly reproduced": 0, "not reproduced": 0,
                      "not run in this profile": 1, "not attempted": 1}


def test_items_table_shows_the_papers_value_ours_how_each_was_checked_and_the_status():
    items = [_item(), _item(id="untested", chapter="", scale="")]
    claims = [_claim(), Claim("01_theory", "c2", "p", "a|b", False, "quick", asserted=False, item="shu-thm31-w2"),
              _claim(kind="own", item="")]
    lines = results.items_table(items, claims).splitlines()
    assert lines[0] == "| item | paper | what | paper's value | this book | chapter | profile | status |"
    assert lines[2] == ("| shu-thm31-w2 | Shumailov et al. 2024 | W2 grows | ∞ | o (holds, asserted); "
                        "a\\|b (**does not hold**, recorded) | 03_gaussian, 01_theory | quick | partly reproduced |")
    assert lines[3] == "| untested | Shumailov et al. 2024 | W2 grows | ∞ | - | - | - | not attempted |"
    assert "no" not in {cell.strip() for cell in lines[2].split("|")}  # the marks are words, not emoji


def test_unlinked_paper_claims_are_those_naming_no_known_item():
    claims = [_claim(), _claim(item=""), _claim(item="typo"), _claim(kind="own", item="")]
    assert results.unlinked_paper_claims([_item()], claims) == claims[1:3]


# -- book/_paper_items.json and the chapters' item ids ----------------------------------------

def _write_items(tmp_path, items):
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"about": "test", "items": items}), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, match", [
    (lambda i: i.pop("note"), "lacks"),
    (lambda i: i.update(paper="someone2025"), "paper must be one of"),
    (lambda i: i.update(scale="big"), "scale must be one of"),
    (lambda i: i.update(chapter="", scale="paper"), "scale must be one of"),
])
def test_load_paper_items_refuses_an_item_with_a_missing_or_bad_field(tmp_path, change, match):
    item = _item()
    change(item)
    with pytest.raises(ValueError, match=match):
        results.load_paper_items(_write_items(tmp_path, [item]))


def test_load_paper_items_refuses_an_id_listed_twice(tmp_path):
    with pytest.raises(ValueError, match="listed twice"):
        results.load_paper_items(_write_items(tmp_path, [_item(), _item()]))


def _named_items(notebook: Path) -> set[str]:
    """The item ids that a chapter's claims.check/add calls name (f-strings expanded over the policies)."""
    names = set()
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "claims." not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("check", "add")):
                continue
            for kw in node.keywords:
                if kw.arg != "item":
                    continue
                text = ast.get_source_segment(source, kw.value)
                value = ast.literal_eval(text.lstrip("f"))
                names |= {value.replace("{policy}", p) for p in ("replace", "accumulate")} if "{" in value else {value}
    return names


def test_the_books_paper_items_are_valid_and_name_existing_chapters():
    items = results.load_paper_items(ROOT / results.PAPER_ITEMS_FILE)
    assert len(items) >= 40
    chapters = {p.stem for p in (ROOT / "book").glob("[0-9]*.ipynb")}
    assert {i["chapter"] for i in items if i["chapter"]} <= chapters
    assert {i["paper"] for i in items} == set(results.PAPERS)
    assert results.load_paper_items() == items  # the default path is the checkout's file


def test_every_item_a_chapter_names_exists_and_every_item_of_such_a_chapter_is_named():
    items = {i["id"]: i for i in results.load_paper_items(ROOT / results.PAPER_ITEMS_FILE)}
    checked = 0
    for notebook in sorted((ROOT / "book").glob("[0-9]*.ipynb")):
        named = _named_items(notebook)
        if not named:
            continue  # a chapter whose claims name no items yet
        checked += 1
        assert named <= set(items), f"{notebook.stem} names unknown items {sorted(named - set(items))}"
        for name in named:  # an item tested outside its own chapter says so in its note
            assert items[name]["chapter"] == notebook.stem or notebook.stem in items[name]["note"], (
                f"{notebook.stem} tests {name}, whose chapter is {items[name]['chapter']!r} and note does not name it")
        own = {i for i, item in items.items() if item["chapter"] == notebook.stem}
        assert own <= named, f"{notebook.stem}: items listed for it that no claim names: {sorted(own - named)}"
    assert checked >= 5
