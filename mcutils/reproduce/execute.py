"""Running one chapter: papermill in a child process, its progress, its time limit, and stopping it.

Each chapter runs as ``python -m papermill`` in a process of its own, with the
log followed for papermill's ``Executing Cell N`` lines (the progress line).
Ctrl-C, SIGTERM (a cancelled CI job) and SIGHUP (a closed terminal) all raise
:class:`Interrupted` inside :class:`_stop_signals_raise`; the chapter's
papermill and kernel are then ended by :func:`_kill_tree`, which a second
signal hurries but never breaks off.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..runs import atomic_write_bytes
from .common import fmt_seconds
from .toc import SCORECARD

KERNEL = "python3"


# --------------------------------------------------------------------------- stop signals

class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: stop the run, end the chapter's processes, report."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                     if s is not None)


# The last stop signal received in :class:`_stop_signals_raise`: the exit code is 128 + it.
_LAST_STOP_SIGNAL: dict = {}


def _raise_interrupted(signum, frame):
    _LAST_STOP_SIGNAL["signum"] = int(signum)
    raise Interrupted(signum)


def threading_is_main() -> bool:
    return threading.current_thread() is threading.main_thread()


class _stop_signals_raise:
    """Inside, SIGTERM and SIGHUP raise :class:`Interrupted` as Ctrl-C does (main thread only)."""

    def __enter__(self):
        self.previous = {}
        _LAST_STOP_SIGNAL.clear()
        if threading_is_main():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, _raise_interrupted)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class _stop_signals_ignored:
    """Inside (cleaning up), further stop signals are noted but do not interrupt the clean-up."""

    def __enter__(self):
        self.previous, self.received = {}, []
        if threading_is_main():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, lambda signum, frame: self.received.append(signum))
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


# --------------------------------------------------------------------------- a chapter's outcome

@dataclass
class Outcome:
    chapter: str
    status: str  # ok | failed | timeout | missing | interrupted
    seconds: float = 0.0
    error: str = ""
    notebook: str = ""
    log: str = ""
    parameters: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    load: float | None = None  # the machine's 1-minute load average when the chapter ended

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key_result(self) -> str:
        """How many recorded claims hold, and the first one beside the paper's value."""
        if self.chapter == SCORECARD and self.ok:
            return "gathers the chapters' claims"
        if not self.claims:
            return self.error if not self.ok else "no claims recorded"
        holding = sum(c.holds for c in self.claims)
        first = self.claims[0]
        text = f"{holding}/{len(self.claims)} claims hold; {first.claim}: {first.ours} (paper {first.paper})"
        return f"{self.error}; {text}" if self.error else text


def _first_error(path: Path) -> str:
    """The first error output of a notebook, ``Name: value``; empty if none or unreadable."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            if output.get("output_type") == "error":
                return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    return ""


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


# --------------------------------------------------------------------------- progress

class Progress:
    """One status line per chapter: rewritten in place on a terminal, a heartbeat line elsewhere."""

    def __init__(self, stream=None, heartbeat_s: float = 60.0):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.heartbeat_s = heartbeat_s
        self._last_beat = 0.0

    def start(self, label: str) -> None:
        self._last_beat = time.monotonic()
        if not self.tty:
            print(f"{label} running", file=self.stream, flush=True)

    def update(self, label: str, cell: int | None, n_cells: int, elapsed: float) -> None:
        where = f"cell {cell}/{n_cells}" if cell else "starting kernel"
        if self.tty:
            print(f"\r\033[K{label} {where}, {fmt_seconds(elapsed)}", end="", file=self.stream, flush=True)
        elif time.monotonic() - self._last_beat >= self.heartbeat_s:
            self._last_beat = time.monotonic()
            print(f"{label} still running: {where}, {fmt_seconds(elapsed)}", file=self.stream, flush=True)

    def finish(self, label: str, outcome: Outcome) -> None:
        end = "\r\033[K" if self.tty else ""
        detail = f" ({outcome.error})" if outcome.error and not outcome.ok else ""
        print(f"{end}{label} {outcome.status} in {fmt_seconds(outcome.seconds)}{detail}",
              file=self.stream, flush=True)


# --------------------------------------------------------------------------- papermill

def _kill_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End papermill and the kernel it started (the kernel runs in a session of its own).

    SIGTERM first, SIGKILL after ``grace_s``; a second Ctrl-C (or SIGTERM,
    SIGHUP) meanwhile skips the wait instead of breaking off the clean-up.
    """
    import psutil
    with _stop_signals_ignored() as signals:
        try:
            family = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            try:
                member.terminate()
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + grace_s
        alive = family
        while alive and time.monotonic() < deadline and not signals.received:
            _, alive = psutil.wait_procs(alive, timeout=0.2)
        for member in alive:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


_CELL_LINE = re.compile(rb"Executing Cell (\d+)")


def execute_notebook(source: Path, attempt: Path, cwd: Path, parameters: dict, log: Path,
                     timeout_s: float, label: str, progress: Progress, kernel: str = KERNEL,
                     env: dict | None = None) -> tuple[str, float]:
    """Run papermill in a child process; returns (status, seconds). ``attempt`` holds the result.

    ``env``: variables added to the kernel's environment (e.g. ``MCUTILS_ASSERT_CLAIMS``)."""
    attempt.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "papermill", str(source), str(attempt), "-k", kernel, "--cwd", str(cwd),
           "--log-output", "--no-progress-bar", "--log-level", "INFO"]
    if parameters:
        params_file = log.with_suffix(".parameters.yaml")
        params_file.write_text(yaml.safe_dump(parameters, sort_keys=True), encoding="utf-8")
        cmd += ["-f", str(params_file)]
    n_cells = len(json.loads(source.read_text(encoding="utf-8")).get("cells", [])) + (1 if parameters else 0)
    # The kernel inherits this environment; MPLBACKEND=Agg (which `make` exports for the tests)
    # would stop it from embedding the figures in the notebook.
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    start = time.monotonic()
    with open(log, "wb") as log_fh:
        log_fh.write(f"$ {' '.join(cmd)}\n".encode())
        log_fh.flush()
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        progress.start(label)
        cell, read_upto = None, 0
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                elapsed = time.monotonic() - start
                with open(log, "rb") as reader:
                    reader.seek(read_upto)
                    chunk = reader.read()
                    read_upto += len(chunk)
                found = _CELL_LINE.findall(chunk)
                if found:
                    cell = int(found[-1])
                if elapsed > timeout_s:
                    _kill_tree(proc)
                    return "timeout", time.monotonic() - start
                progress.update(label, cell, n_cells, elapsed)
        except KeyboardInterrupt:  # Ctrl-C, and SIGTERM / SIGHUP (see Interrupted)
            _kill_tree(proc)
            return "interrupted", time.monotonic() - start
        finally:
            if proc.poll() is None:  # any other way out (a bug, an error writing the log): no orphans
                _kill_tree(proc)
    return ("ok" if proc.returncode == 0 else "failed"), time.monotonic() - start


def _set_papermill_paths(path: Path, relative: str) -> None:
    """Record the notebook's own place in papermill's metadata instead of the runner's scratch paths."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    meta = nb.get("metadata", {}).get("papermill")
    if isinstance(meta, dict):
        meta["input_path"] = meta["output_path"] = relative
        atomic_write_bytes(path, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())
