"""The book as committed: it builds without a single warning, and every notebook of the table of
contents has the anatomy that the site, Colab, papermill and the scorecard rely on.

Nothing here executes a chapter (nbval does that); these checks read the committed notebooks.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from booksite import ROOT, build_site
from mcutils import colab, reproduce, results

NOTEBOOKS = reproduce.toc_notebooks(ROOT)
CHAPTERS = reproduce.toc_chapters(ROOT)
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def load(page) -> dict:
    path = page.source(ROOT)
    if not path.is_file():
        pytest.fail(f"{page.doc} is in _toc.yml but {path.relative_to(ROOT)} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_book_builds_without_warnings():
    site = build_site()
    assert site.returncode == 0 and not site.warnings, (
        "jupyter-book build -W -n --keep-going failed or warned:\n" + "\n".join(site.warnings or [site.log[-3000:]]))
    assert (site.html / "index.html").is_file()
    for doc in reproduce.toc_docs(ROOT):
        assert (site.html / f"{doc}.html").is_file(), f"no page for {doc}"


def test_every_toc_entry_exists():
    for doc in reproduce.toc_docs(ROOT):
        assert (ROOT / f"{doc}.md").is_file() or (ROOT / f"{doc}.ipynb").is_file(), f"{doc} in _toc.yml is missing"


@pytest.mark.parametrize("page", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_kernelspec_and_parameters_cell(page):
    nb = load(page)
    assert nb["metadata"].get("kernelspec") == KERNELSPEC, "save the notebook with the python3 kernelspec"
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{page.name} needs exactly one cell tagged 'parameters', has {len(tagged)}"
    assert tagged[0]["cell_type"] == "code"
    params = reproduce.notebook_parameters(page.source(ROOT))
    if page in CHAPTERS:
        assert "profile" in params, "a chapter's parameters cell defines `profile` (the banner names it)"
    # papermill's own cell of a profile run must never be committed
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"]), (
        f"{page.name} carries an injected-parameters cell: commit the quick profile's notebook (make book)")


def test_colab_install_cells_are_in_step_with_the_config():
    found = colab.problems(ROOT)
    assert not found, "run `python -m mcutils.colab --write`:\n" + "\n".join(f"{k}: {v}" for k, v in found.items())
    source = colab.install_cell_source(ROOT)
    assert f"@v{colab.book_version(ROOT)}\"" in source and colab.repository_url(ROOT) in source


def test_book_version_is_the_package_version():
    import mcutils
    assert colab.book_version(ROOT) == mcutils.__version__


@pytest.mark.parametrize("page", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_complete_and_without_errors(page):
    nb = load(page)
    for index, cell in enumerate(code_cells(nb)):
        assert cell.get("execution_count") is not None, (
            f"{page.name}: code cell {index} has not been executed; run `make book`")
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", (
                f"{page.name}: code cell {index} failed: {output.get('ename')}: {output.get('evalue')}")
            text = output.get("text", "")
            text = text if isinstance(text, str) else "".join(text)
            assert "Traceback (most recent call last)" not in text, f"{page.name}: code cell {index} shows a traceback"
    assert not nb["metadata"].get("papermill", {}).get("exception"), f"{page.name}: papermill recorded an exception"


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.name)
def test_chapter_names_its_profile_and_records_claims(page):
    text = json.dumps(load(page)["cells"])
    assert "| profile: quick |" in text, (
        f"{page.name}: the committed outputs must show the quick profile's banner (mcutils.book.start_chapter)")
    figures = text.count('"image/png"') + text.count('"image/svg+xml"')
    assert figures, (f"{page.name}: the committed notebook shows no figure; was it executed with MPLBACKEND=Agg? "
                     "`make book` executes with the inline backend")
    claims = results.gather([page.source(ROOT)])
    assert claims, f"{page.name} records no claims: end the chapter with claims.show()"
    assert {c.profile for c in claims} == {"quick"}


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_profiles_fit_the_chapters_parameters(profile):
    loaded = reproduce.load_profile(profile, ROOT)
    names = {p.name for p in CHAPTERS}
    assert set(loaded.chapters) <= names, f"profiles/{profile}.yaml names chapters not in _toc.yml: " \
                                          f"{sorted(set(loaded.chapters) - names)}"
    # raises ReproduceError for a parameter a chapter lacks or a value of the wrong type
    plan = reproduce.plan_parameters(loaded, [p for p in CHAPTERS if p.source(ROOT).is_file()], ROOT)
    if profile == "quick":
        assert all(not injected for injected in plan.values()), f"the quick profile must change nothing: {plan}"


def test_paper_profile_has_a_section_for_every_chapter():
    loaded = reproduce.load_profile("paper", ROOT)
    missing = [p.name for p in CHAPTERS if p.name not in loaded.chapters]
    assert not missing, f"profiles/paper.yaml has no section for {missing}"


def test_timings_table_covers_every_chapter_and_is_current():
    data = json.loads((ROOT / reproduce.TIMINGS_JSON).read_text())
    quick_cpu = data.get("quick", {}).get("cpu", {})
    missing = [p.name for p in CHAPTERS if p.name not in quick_cpu]
    assert not missing, f"no measured quick-profile time for {missing}: run `make book`"
    stale = "is stale: run `python -m mcutils.reproduce --render-timings`"
    assert (ROOT / reproduce.TIMINGS_MD).read_text() == reproduce.render_timings(ROOT, data), f"{reproduce.TIMINGS_MD} {stale}"
    # The README's copy of the table changes only when asked (--record-timings or --render-timings), so
    # that a user's `make book` leaves README.md alone: it must list every chapter, not match to the second.
    readme = (ROOT / "README.md").read_text()
    assert all(marker in readme for marker in reproduce.README_MARKERS), "README.md has lost its timings markers"
    section = readme.split(reproduce.README_MARKERS[0])[1].split(reproduce.README_MARKERS[1])[0]
    missing = [p.name for p in CHAPTERS if f"`{p.name}`" not in section]
    assert not missing, f"the README's timings table lacks {missing}: run `python -m mcutils.reproduce --render-timings`"


def test_scorecard_is_in_the_toc_after_the_chapters():
    names = [p.name for p in NOTEBOOKS]
    assert names[-1] == reproduce.SCORECARD, "the scorecard comes after every chapter in _toc.yml"
