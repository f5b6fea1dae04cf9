"""The batch runner against bad options and signals (issue 12): refused before work, or stopped cleanly.

A tiny fake book; the signal tests start the runner as a process, wait until
its chapter's kernel runs, signal it, and check that papermill and the kernel
are gone and the exit code is 128 + the signal.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

from mcutils import reproduce

import test_robust_common as common

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _notebook(path: Path, parameters: str, body: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}")]
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells += [params] + [nbformat.v4.new_code_cell(src) for src in body]
    nbformat.write(nb, path)


@pytest.fixture
def book(tmp_path):
    root = tmp_path / "book-root"
    (root / "book").mkdir(parents=True)
    (root / "profiles").mkdir()
    (root / "book" / "intro.md").write_text("# Fake\n")
    (root / "_config.yml").write_text("title: Fake\n")
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro",
                                                   "chapters": [{"file": "book/01_fast"}, {"file": "book/02_slow"}]}))
    params = 'profile: str = "quick"\nseed: int = 0\nruns_dir: str = ""\nsleep_s: float = 0.0'
    _notebook(root / "book" / "01_fast.ipynb", params, ['print("fast", seed)'])
    _notebook(root / "book" / "02_slow.ipynb", params, ["import time\ntime.sleep(sleep_s)"])
    (root / "profiles" / "quick.yaml").write_text("profile: quick\nchapters: {}\n")
    (root / "README.md").write_text("# Fake\n\n" + reproduce.README_MARKERS[0] + "\nold table\n"
                                    + reproduce.README_MARKERS[1] + "\n")
    return root


def _main(book, *args):
    return reproduce.main(["--root", str(book), "--no-build", *args])


def _one_line_error(capsys, *fragments) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused_even_in_a_dry_run(book, capsys, value):
    assert _main(book, f"--timeout={value}", "--dry-run") == 2
    _one_line_error(capsys, "--timeout must be a positive, finite number")


def test_a_profile_timeout_of_nan_is_refused(book, capsys):
    (book / "profiles" / "odd.yaml").write_text("profile: odd\ntimeout_s: .nan\n")
    assert _main(book, "--profile", "odd", "--dry-run") == 2
    _one_line_error(capsys, "timeout_s must be a positive number")


def test_a_param_that_is_not_yaml_is_one_line(book, capsys):
    assert _main(book, "-p", "seed=[1,", "--dry-run") == 2
    _one_line_error(capsys, "--param 'seed=[1,'", "not valid YAML")


def test_a_misspelt_chapter_in_a_profile_is_an_error(book, capsys):
    (book / "profiles" / "typo.yaml").write_text(yaml.safe_dump({"profile": "typo",
                                                                  "chapters": {"02_slwo": {"sleep_s": 1.0}}}))
    assert _main(book, "--profile", "typo", "--dry-run") == 2
    _one_line_error(capsys, "'02_slwo' (did you mean '02_slow'?)", "_toc.yml does not list")
    assert not (book / "reproductions").exists()


def test_an_unusable_runs_dir_is_refused_before_any_chapter(book, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("x")
    assert _main(book, "-p", f"runs_dir={target}") == 2
    _one_line_error(capsys, "runs_dir", f"{target} is a file, not a folder")
    assert not (book / "reproductions" / "quick" / "logs").exists()  # no chapter ran


def test_a_full_runs_dir_is_refused_before_any_chapter(book, tmp_path, capsys):
    with common.small_tmpfs(tmp_path / "full", "1m") as mount:
        common.fill(mount)
        assert _main(book, "-p", f"runs_dir={mount}") == 2
        _one_line_error(capsys, "runs_dir", "free, less than the")


def test_in_place_never_rewrites_the_readme_and_record_timings_does(book):
    before = (book / "README.md").read_text()
    outcomes, _ = reproduce.run("quick", root=str(book), in_place=True, chapters="01", stream=open(os.devnull, "w"))
    assert [o.status for o in outcomes] == ["ok"]
    assert (book / "README.md").read_text() == before  # `make book` leaves the README alone
    assert not (book / "book" / "_timings.json").exists()  # nor the timings: only --record-timings records
    reproduce.run("quick", root=str(book), chapters="01", build=False, record=True, stream=open(os.devnull, "w"))
    after = (book / "README.md").read_text()
    assert after != before and "`01_fast`" in after and "old table" not in after


def _start(book, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mcutils.reproduce", "--root", str(book), "--no-build",
                             "--chapters", "02", "-p", "sleep_s=120", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: only the runner gets the signal


def _wait_for_kernel(book: Path, runner: subprocess.Popen, timeout: float = 90) -> list[psutil.Process]:
    """The runner's descendants once the kernel runs the chapter (papermill, the kernel)."""
    deadline = time.monotonic() + timeout
    log = book / "reproductions" / "quick" / "logs" / "02_slow.log"
    while time.monotonic() < deadline and runner.poll() is None:
        try:
            family = psutil.Process(runner.pid).children(recursive=True)
            kernels = [p for p in family if "ipykernel" in " ".join(p.cmdline())]
        except psutil.Error:
            family, kernels = [], []
        if kernels and log.is_file() and "Executing Cell 3" in log.read_text(errors="replace"):
            return family
        time.sleep(0.2)
    _end(runner, [])
    raise AssertionError("the chapter's kernel did not start")


def _end(runner: subprocess.Popen, family: list[psutil.Process]) -> None:
    """Whatever the test's outcome, leave no process of its own behind."""
    for process in [*family, psutil.Process(runner.pid)] if runner.poll() is None else family:
        try:
            process.kill()
        except psutil.Error:
            pass
    runner.wait(timeout=30)


def _gone(family: list[psutil.Process], timeout: float = 30) -> bool:
    _, alive = psutil.wait_procs(family, timeout=timeout)
    return not alive


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_ends_papermill_and_the_kernel(book, signum):
    runner, family = _start(book), []
    try:
        family = _wait_for_kernel(book, runner)
        assert len(family) >= 2  # papermill and its kernel
        os.kill(runner.pid, signum)
        out, err = runner.communicate(timeout=60)
        assert runner.returncode == 128 + signum, err
        assert "Traceback" not in err and "interrupted" in out + err
        assert _gone(family), [p.cmdline() for p in family if p.is_running()]
        assert "02_slow" in out and "interrupted" in out  # the summary still says what happened
    finally:
        _end(runner, family)


def test_a_double_ctrl_c_ends_everything_without_a_traceback(book):
    runner, family = _start(book), []
    try:
        family = _wait_for_kernel(book, runner)
        os.kill(runner.pid, signal.SIGINT)
        time.sleep(0.05)
        os.kill(runner.pid, signal.SIGINT)  # during the clean-up
        out, err = runner.communicate(timeout=60)
        assert runner.returncode == 130 and "Traceback" not in err, err
        assert _gone(family)
    finally:
        _end(runner, family)


def test_kill_tree_survives_a_second_interrupt(monkeypatch):
    """In-process: a KeyboardInterrupt-like signal during the clean-up does not break it off."""
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); time.sleep(60)"])
    time.sleep(0.3)
    start = time.monotonic()
    import threading
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    reproduce._kill_tree(proc, grace_s=20)  # ignores SIGTERM: killed once the second signal skips the wait
    assert proc.poll() is not None and time.monotonic() - start < 10
