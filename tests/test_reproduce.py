"""The batch runner on a tiny fake book: parameters injected, failures reported and carried past,
time limits enforced, and the book's own notebooks never overwritten (except by a successful --in-place run)."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import nbformat
import pytest
import yaml

from mcutils import reproduce
from mcutils.reproduce import ReproduceError

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def make_notebook(path: Path, title: str, parameters: str, body: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nA fake chapter for the runner's tests.")]
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells.append(params)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    nbformat.write(nb, path)


CLAIM = """from mcutils.results import Claims
claims = Claims("{name}", profile)
claims.check("x is at least one", paper=1, ours=x, holds=x >= 1)
claims.show()"""


@pytest.fixture
def fake_book(tmp_path):
    root = tmp_path / "fakebook"
    (root / "book").mkdir(parents=True)
    (root / "profiles").mkdir()
    (root / "book" / "intro.md").write_text("# Fake book\n")
    (root / "_config.yml").write_text("title: Fake\nexecute:\n  execute_notebooks: 'off'\n")
    (root / "_toc.yml").write_text(yaml.safe_dump({
        "format": "jb-book", "root": "book/intro",
        "chapters": [{"file": "book/01_ok"}, {"file": "book/02_fail"}, {"file": "book/03_slow"},
                     {"file": "book/04_ok"}, {"file": "book/05_missing"}]}))
    params = 'profile: str = "quick"\nx: int = 1\nlabel: str = "default"'
    make_notebook(root / "book" / "01_ok.ipynb", "First", params,
                  ['print(f"x = {x}, label = {label}, profile = {profile}")', CLAIM.format(name="01_ok")])
    make_notebook(root / "book" / "02_fail.ipynb", "Fails", params,
                  ['raise RuntimeError("this chapter breaks on purpose")'])
    make_notebook(root / "book" / "03_slow.ipynb", "Slow", params + "\nsleep_s: float = 0.0",
                  ["import time\ntime.sleep(sleep_s)"])
    make_notebook(root / "book" / "04_ok.ipynb", "Last", params, ['print(f"x = {x}")', CLAIM.format(name="04_ok")])
    (root / "profiles" / "quick.yaml").write_text("profile: quick\nchapters: {}\n")
    (root / "profiles" / "paper.yaml").write_text(yaml.safe_dump({
        "profile": "paper", "common": {"profile": "paper", "label": "big"},
        "chapters": {"01_ok": {"x": 5}, "03_slow": {"sleep_s": 120.0}}}))
    return root


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def code_outputs(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def test_paper_run_injects_parameters_reports_failures_and_leaves_book_alone(fake_book, capsys):
    before = digest(fake_book / "book")
    code = reproduce.main(["--profile", "paper", "--root", str(fake_book), "--timeout", "15", "--no-build"])
    assert code == 1  # non-zero: chapters failed
    out = fake_book / "reproductions" / "paper"
    summary = json.loads((out / "summary.json").read_text())
    status = {c["chapter"]: c["status"] for c in summary["chapters"]}
    # the failure is reported, the runner carries on past it and past the timeout
    assert status == {"01_ok": "ok", "02_fail": "failed", "03_slow": "timeout", "04_ok": "ok", "05_missing": "missing"}
    failed = summary["chapters"][1]
    assert "RuntimeError: this chapter breaks on purpose" in failed["error"]
    assert summary["chapters"][2]["seconds"] < 60
    # book/ untouched; everything went under reproductions/paper
    assert digest(fake_book / "book") == before
    executed = out / "book" / "01_ok.ipynb"
    assert "x = 5, label = big, profile = paper" in code_outputs(executed)
    injected = [c for c in json.loads(executed.read_text())["cells"]
                if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "x = 5" in "".join(injected[0]["source"])
    # the profile's common value reaches every chapter; the chapter's own section only its chapter
    assert "x = 1" in code_outputs(out / "book" / "04_ok.ipynb")
    assert (out / "failed" / "02_fail.ipynb").is_file() and not (out / "book" / "02_fail.ipynb").exists()
    assert (out / "logs" / "01_ok.log").is_file()
    # the closing table: status, the claims recorded, the exit code
    table = capsys.readouterr().out
    assert "02_fail" in table and "failed" in table and "1/1 claims hold" in table
    assert summary["chapters"][0]["claims"][0]["ours"] == "5"
    assert "| 02_fail | failed |" in (out / "summary.md").read_text()


def test_a_chapter_listed_but_missing_is_a_failure(fake_book, capsys):
    code = reproduce.main(["--profile", "quick", "--root", str(fake_book), "--chapters", "05", "--no-build"])
    assert code == 1
    assert "book/05_missing.ipynb does not exist" in capsys.readouterr().out


def test_in_place_replaces_only_successful_chapters_and_records_no_times(fake_book):
    book = fake_book / "book"
    failing_before = (book / "02_fail.ipynb").read_bytes()
    readme = "# Fake\n"
    (fake_book / "README.md").write_text(readme)
    outcomes, _ = reproduce.run("quick", root=str(fake_book), in_place=True, chapters="01,02",
                                stream=io.StringIO())
    assert [o.status for o in outcomes] == ["ok", "failed"]
    assert "x = 1, label = default, profile = quick" in code_outputs(book / "01_ok.ipynb")
    # quick = the notebooks' defaults: nothing injected into the committed notebook
    cells = json.loads((book / "01_ok.ipynb").read_text())["cells"]
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in cells)
    assert json.loads((book / "01_ok.ipynb").read_text())["metadata"]["papermill"]["output_path"] \
        == "book/01_ok.ipynb"
    assert (book / "02_fail.ipynb").read_bytes() == failing_before
    # `make book` records no times: a chapter reading its chains back says nothing about a first run
    assert not (book / "_timings.json").exists()
    assert (fake_book / "README.md").read_text() == readme


def test_recorded_times_come_from_runs_from_scratch(fake_book, monkeypatch):
    book = fake_book / "book"
    make_notebook(book / "01_ok.ipynb", "First", 'profile: str = "quick"',
                  ['import os\nprint("runs:", os.environ.get("MCUTILS_RUNS_DIR"), "cache:", '
                   'os.environ.get("MCUTILS_CACHE_DIR"))'])
    start, end = reproduce.README_MARKERS
    (fake_book / "README.md").write_text(f"# Fake\n\n{start}\nold table\n{end}\n")
    monkeypatch.setenv("MCUTILS_RUNS_DIR", "/somewhere/with/old/chains")
    stale = fake_book / "reproductions" / "quick" / "fresh" / "runs" / "quick" / "old-chain"
    stale.mkdir(parents=True)
    outcomes, _ = reproduce.run("quick", root=str(fake_book), in_place=True, chapters="01,02", record=True,
                                stream=io.StringIO())
    assert [o.status for o in outcomes] == ["ok", "failed"]
    fresh = fake_book / "reproductions" / "quick" / "fresh"
    assert f"runs: {fresh / 'runs'} cache: {fresh / 'cache'}" in code_outputs(book / "01_ok.ipynb")
    assert not stale.exists()  # emptied first
    assert os.environ["MCUTILS_RUNS_DIR"] == "/somewhere/with/old/chains"  # restored afterwards
    timings = json.loads((book / "_timings.json").read_text())
    assert set(timings["quick"]["cpu"]) == {"01_ok"}
    assert "--record-timings" in timings["quick"]["cpu"]["01_ok"]["command"]
    table = (book / "_timings.md").read_text()
    assert "{doc}`/book/01_ok`" in table and "not measured" in table
    assert "`01_ok`" in (fake_book / "README.md").read_text() and "old table" not in (fake_book / "README.md").read_text()


def test_recording_times_refuses_a_runs_folder_of_the_callers(fake_book):
    make_notebook(fake_book / "book" / "01_ok.ipynb", "First", 'profile: str = "quick"\nruns_dir: str = ""', ["1"])
    with pytest.raises(ReproduceError, match="--record-timings runs every chapter from scratch.*do not pass runs_dir"):
        reproduce.run("quick", root=str(fake_book), in_place=True, chapters="01", record=True,
                      params={"runs_dir": "/data/runs"}, stream=io.StringIO())


def test_bad_options_fail_before_any_work(fake_book):
    with pytest.raises(ReproduceError, match="'y' is not a parameter of 01_ok"):
        bad = fake_book / "bad.yaml"
        bad.write_text(yaml.safe_dump({"profile": "bad", "chapters": {"01_ok": {"y": 2}}}))
        reproduce.run(str(bad), root=str(fake_book), stream=io.StringIO())
    with pytest.raises(ReproduceError, match="x must be int"):
        reproduce.run("quick", root=str(fake_book), params={"x": "3"}, stream=io.StringIO())
    with pytest.raises(ReproduceError, match="no selected chapter has a parameter 'seeds'"):
        reproduce.run("quick", root=str(fake_book), params={"seeds": 3}, stream=io.StringIO())
    with pytest.raises(ReproduceError, match="matches no chapter"):
        reproduce.run("quick", root=str(fake_book), chapters="99_nothing", stream=io.StringIO())
    with pytest.raises(ReproduceError, match="--in-place runs only the quick profile"):
        reproduce.run("paper", root=str(fake_book), in_place=True, stream=io.StringIO())
    with pytest.raises(ReproduceError, match="would write into the book's own pages"):
        reproduce.run("quick", root=str(fake_book), output_dir=str(fake_book / "book" / "x"), stream=io.StringIO())
    with pytest.raises(ReproduceError, match="no file"):
        reproduce.run("huge", root=str(fake_book), stream=io.StringIO())
    assert not (fake_book / "reproductions").exists()
    assert reproduce.main(["--profile", "paper", "--root", str(fake_book), "--in-place"]) == 2


def test_dry_run_prints_what_each_chapter_gets(fake_book):
    stream = io.StringIO()
    reproduce.run("paper", root=str(fake_book), dry_run=True, params={"x": 7}, stream=stream)
    lines = stream.getvalue().splitlines()
    assert '01_ok: {"label": "big", "profile": "paper", "x": 7}' in lines
    assert '03_slow: {"label": "big", "profile": "paper", "sleep_s": 120.0, "x": 7}' in lines
    assert not (fake_book / "reproductions").exists()


def test_chapter_list_comes_from_the_toc(fake_book):
    names = ["01_ok", "02_fail", "03_slow", "04_ok", "05_missing"]
    assert [p.name for p in reproduce.toc_chapters(fake_book)] == names
    toc = yaml.safe_load((fake_book / "_toc.yml").read_text())
    toc["chapters"] = toc["chapters"][::-1]
    (fake_book / "_toc.yml").write_text(yaml.safe_dump(toc))
    assert [p.name for p in reproduce.toc_chapters(fake_book)] == names[::-1]


def test_readme_timings_section_is_replaced_between_its_markers():
    start, end = reproduce.README_MARKERS
    readme = f"# Book\n\nbefore\n{start}\nold table\n{end}\nafter\n"
    updated = reproduce.readme_with_timings(readme, "| new | table |\n")
    assert updated == f"# Book\n\nbefore\n{start}\n| new | table |\n{end}\nafter\n"


def test_parameters_cell_is_read_with_types_and_defaults(fake_book):
    params = reproduce.notebook_parameters(fake_book / "book" / "03_slow.ipynb")
    assert params["sleep_s"].annotation == "float" and params["sleep_s"].default == 0.0
    assert params["label"].default == "default"


def test_profile_book_is_built_with_its_profile_in_the_footer(fake_book):
    (fake_book / "_toc.yml").write_text(yaml.safe_dump(
        {"format": "jb-book", "root": "book/intro", "chapters": [{"file": "book/01_ok"}, {"file": "book/04_ok"}]}))
    paper = yaml.safe_load((fake_book / "profiles" / "paper.yaml").read_text())
    del paper["chapters"]["03_slow"]  # a profile may name only chapters of _toc.yml
    (fake_book / "profiles" / "paper.yaml").write_text(yaml.safe_dump(paper))
    code = reproduce.main(["--profile", "paper", "--root", str(fake_book), "--chapters", "01"])
    out = fake_book / "reproductions" / "paper"
    assert code == 0, (out / "logs" / "build.log").read_text()[-3000:]  # all ran, and the book built
    page = (out / "_build" / "html" / "book" / "01_ok.html").read_text()
    assert "x = 5, label = big, profile = paper" in page
    assert "Outputs produced by the paper profile: 01_ok" in page
    assert "quick-profile outputs: 04_ok" in page  # the chapter not run keeps the book's notebook


# --------------------------------------------------------------------------- the runner as a package

ROOT = Path(__file__).resolve().parents[1]


def test_outside_a_checkout_the_runner_says_in_one_line_what_is_missing(tmp_path, monkeypatch, capsys):
    # As the package pip installs it (on Colab): no checkout beside mcutils, none in the working directory.
    monkeypatch.setattr(reproduce.toc, "repo_root", lambda: None)  # find_root looks it up in the toc module
    monkeypatch.chdir(tmp_path)
    assert reproduce.main(["--profile", "paper", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{tmp_path} is not a checkout of the book (no _toc.yml and no book/)" in err
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    with pytest.raises(ReproduceError, match=r"\(no book/\)"):
        reproduce.find_root(tmp_path)


def test_the_entry_point_and_the_package_re_export_the_runner():
    import importlib
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["mcutils-reproduce"]
    module, _, name = spec.partition(":")
    assert getattr(importlib.import_module(module), name) is reproduce.cli.main
    for name in reproduce.__all__:
        assert hasattr(reproduce, name), name
    assert not hasattr(reproduce, "notebook_title")


def test_the_chapters_do_not_need_the_runner():
    """What the chapters import (all the installed package must serve) never imports the checkout-only runner."""
    import re
    import subprocess
    import sys
    imported = set()
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
            imported |= {f"mcutils.{m}" for m in re.findall(r"from mcutils\.(\w+) import", source)}
            for names in re.findall(r"from mcutils import ([\w, ]+)", source):
                imported |= {f"mcutils.{n.strip()}" for n in names.split(",") if n.strip()}
    assert "mcutils.book" in imported and "mcutils.reproduce" not in imported
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in sorted(imported)) \
        + "sys.exit('mcutils.reproduce' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
