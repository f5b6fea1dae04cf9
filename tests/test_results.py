"""Claims a chapter tests (mcutils.results): checked, shown, and gathered back from notebooks."""
from __future__ import annotations

import math
from dataclasses import asdict

import nbformat
import pytest

from mcutils.results import METADATA_KEY, Claim, Claims, gather, markdown_table

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def test_check_records_a_claim_that_holds():
    claims = Claims("01_theory", "quick")
    record = claims.check("variance shrinks", paper=1, ours=0.123456, holds=True, note="M=100")
    assert record == Claim("01_theory", "variance shrinks", "1", "0.1235", True, "quick", "M=100")
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
    lines = claims.to_markdown().splitlines()
    assert lines[0] == "| claim | paper | this book | holds | profile |"
    assert lines[2] == "| P(a\\|b) = q | 0.5 | 0.49 | yes | paper |"
    assert lines[3] == "| absorbed | 1 | 0.9 | **no** | paper |"
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
    assert "| two plus two | 4 | 4 | yes | quick |" in outputs[0].data["text/markdown"]
    path = tmp_path / "99_tiny.ipynb"
    nbformat.write(nb, path)
    found = gather([path])
    assert [(r.chapter, r.claim, r.paper, r.ours, r.holds, r.note) for r in found] == [
        ("99_tiny", "two plus two", "4", "4", True, ""),
        ("99_tiny", "pi", "3.142", "3.143", True, "tol 0.01"),
    ]
    assert math.isclose(float(found[1].ours), 22 / 7, rel_tol=1e-3)
