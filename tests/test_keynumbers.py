"""Key numbers: compared within measured tolerances, and the committed notebooks are executed at HEAD.

The comparison itself runs in ``book/conftest.py`` on every chapter nbval
re-executes (on another kernel path and thread count than ``make book``);
these tests check the pieces and show that the comparison bites.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keynumbers import deviations
from mcutils import reproduce, results
from mcutils.results import KeyNumber, KeyNumbers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # measure_tolerances, a checkout-only tool
CHAPTERS = reproduce.toc_chapters(ROOT)
TORCH_CHAPTERS = ("05_vae", "06_opt125m", "07_accumulate")


def number(value, tolerance=0.1, name="x"):
    return KeyNumber("05_vae", name, "a number", value, tolerance, "measured", "quick")


def test_a_number_within_its_tolerance_passes_and_one_beyond_it_fails():
    assert deviations([number(1.0)], [number(1.09)]) == []
    [failure] = deviations([number(1.0)], [number(1.11)])
    assert "05_vae x" in failure and "committed 1 ± 0.1" in failure


def test_a_number_missing_from_the_fresh_run_or_without_a_tolerance_fails():
    assert "not by the re-executed one" in deviations([number(1.0)], [])[0]
    assert "no measured tolerance" in deviations([number(1.0, tolerance=None)], [number(1.0)])[0]


def test_key_numbers_take_their_tolerance_from_the_measurements_in_the_quick_profile_only():
    measured = {"x": {"tolerance": 0.5, "basis": "4 × the largest deviation"}}
    quick = KeyNumbers("05_vae", "quick", tolerances=measured)
    quick.add("x", 2.0, what="a number")
    assert (quick.records[0].tolerance, quick.records[0].basis) == (0.5, "4 × the largest deviation")
    paper = KeyNumbers("05_vae", "paper", tolerances=measured)
    paper.add("x", 2.0, what="a number")
    assert paper.records[0].tolerance is None
    with pytest.raises(ValueError, match="recorded twice"):
        quick.add("x", 3.0, what="again")


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.name)
def test_committed_chapter_was_executed_by_the_code_as_it_is(page):
    record = results.provenance_in(page.source(ROOT))
    assert record is not None, f"{page.name} has no provenance record: execute it with `make book`"
    assert record["profile"] == "quick", f"{page.name} carries {record['profile']!r} outputs; commit the quick profile's"
    stale = {k: (record.get(k), v) for k, v in results.code_versions().items() if record.get(k) != v}
    assert not stale, (f"{page.name} was executed by older code (committed, current): {stale}; "
                       "run `make book` and commit the notebooks")


@pytest.mark.parametrize("chapter", TORCH_CHAPTERS)
def test_every_key_number_of_a_torch_chapter_carries_its_measured_tolerance(chapter):
    committed = results.gather_numbers(ROOT / "book" / f"{chapter}.ipynb")
    assert committed, f"{chapter} records no key numbers"
    measured = results.load_tolerances(chapter, ROOT)
    for n in committed:
        assert n.name in measured, f"{chapter} {n.name}: no tolerance measured; run `make tolerances`"
        assert n.tolerance == measured[n.name]["tolerance"], (
            f"{chapter} {n.name}: the notebook shows ± {n.tolerance}, book/_tolerances.json says "
            f"{measured[n.name]['tolerance']}; run `make book` after `make tolerances`")


@pytest.mark.slow
def test_the_comparison_fails_when_a_training_setting_changes(tmp_path):
    """The VAE chapter with 10 epochs a generation instead of 20: its numbers leave their tolerances."""
    out = tmp_path / "05_vae.ipynb"
    env = {**os.environ, "MCUTILS_RUNS_DIR": str(tmp_path / "runs"), "MCUTILS_CACHE_DIR": str(tmp_path / "cache"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "book" / "05_vae.ipynb"), str(out),
                    "-k", "python3", "--cwd", str(ROOT / "book"), "-p", "epochs", "10", "--no-progress-bar"],
                   env=env, check=True, capture_output=True)
    committed = results.gather_numbers(ROOT / "book" / "05_vae.ipynb")
    failures = deviations(committed, results.gather_numbers(out))
    moved = {line.split()[1] for line in failures}
    assert {"loss_gen0", "kl_gen0"} <= moved, failures


# -- other machines' runs (tools/measure_tolerances.py --fold-in) ---------------------------------

def _measured(tolerance=0.04):
    """One key number measured on one CPU's configurations, as book/_tolerances.json holds it."""
    return {"chapters": {"06_opt125m": {"x": {"tolerance": tolerance, "basis": "configs",
                                              "values": {"native-1": 4.14, "avx2-2": 4.15}}}}}


def test_another_machines_run_widens_a_tolerance_to_four_times_the_largest_difference_between_any_two_runs():
    import measure_tolerances as mt

    data = _measured()
    mt.fold_in(data, "intel", "committed at abc", {"06_opt125m": {"x": 4.08}}, results.code_versions())
    [line] = mt.widen_by_other_machines(data, 4.0)
    entry = data["chapters"]["06_opt125m"]["x"]
    assert entry["tolerance"] == pytest.approx(4 * (4.15 - 4.08)) and "06_opt125m x" in line
    assert "intel against avx2-2" in entry["basis"] and "1 committed run(s) of other machines" in entry["basis"]
    assert entry["values"] == {"native-1": 4.14, "avx2-2": 4.15}  # the one CPU's runs stay apart


def test_another_machines_run_never_narrows_a_tolerance_nor_counts_once_the_code_has_changed():
    import measure_tolerances as mt

    data = _measured(tolerance=1.0)
    mt.fold_in(data, "intel", "committed at abc", {"06_opt125m": {"x": 4.08}}, results.code_versions())
    assert mt.widen_by_other_machines(data, 4.0) == [] and data["chapters"]["06_opt125m"]["x"]["tolerance"] == 1.0
    stale = _measured()
    mt.fold_in(stale, "old", "committed at abc", {"06_opt125m": {"x": 3.0}}, {**results.code_versions(), "lm_engine": -1})
    assert mt.widen_by_other_machines(stale, 4.0) == [] and stale["chapters"]["06_opt125m"]["x"]["tolerance"] == 0.04


def test_folding_in_a_number_the_tolerances_do_not_know_fails_naming_the_flag(tmp_path):
    import measure_tolerances as mt

    out = tmp_path / "tolerances.json"
    out.write_text(json.dumps(_measured()))
    with pytest.raises(SystemExit, match="--fold-in-number: expected LABEL:CHAPTER:NUMBER=VALUE"):
        mt.main(["--out", str(out), "--fold-in-number", "ci:06_opt125m:no_such_number=1.0"])
    assert mt.main(["--out", str(out), "--fold-in-number", "ci:06_opt125m:x=4.30"]) == 0
    entry = json.loads(out.read_text())["chapters"]["06_opt125m"]["x"]
    assert entry["tolerance"] == pytest.approx(4 * (4.30 - 4.14))


def test_the_committed_tolerances_cover_the_runs_of_every_machine_they_name():
    """book/_tolerances.json: each number's tolerance is at least four times the spread of its runs."""
    import measure_tolerances as mt

    data = json.loads((ROOT / results.TOLERANCES_FILE).read_text(encoding="utf-8"))
    assert data.get(mt.OTHER_MACHINES), "no other machine's runs folded in"
    for chapter, numbers in data["chapters"].items():
        for name, entry in numbers.items():
            runs = mt.all_runs(data, chapter, name)
            if set(runs) == set(entry["values"]):
                continue  # measured on one CPU only: its tolerance is the configurations' (test above)
            assert entry["tolerance"] >= data["factor"] * (max(runs.values()) - min(runs.values())) - 1e-12, name
