"""The batch runner: every chapter of the book under one profile, with papermill.

``python -m mcutils.reproduce --profile quick|paper|path.yaml`` (also the
``mcutils-reproduce`` entry point and ``make reproduce PROFILE=...``) runs the
chapters listed in ``_toc.yml``, in order, each in its own papermill process
with the profile's parameters (``common`` merged with the chapter's section of
``profiles/<profile>.yaml``), under a wall-clock limit per chapter.  A chapter
that fails or runs out of time is reported and the runner carries on with the
next.  At the end it prints a table (chapter, status, time, and the chapter's
key result beside the paper's, read from the claims the chapter recorded with
:mod:`mcutils.results`) and exits non-zero if any chapter failed.

Where things go (``<out>`` is ``reproductions/<profile>/`` unless
``--output-dir`` says otherwise; the folder never lies inside ``book/``):

``<out>/book/*.ipynb``
    the executed notebooks of this profile, beside a copy of the book's pages,
    from which ``<out>/_build/html`` is built at the end;
``<out>/logs/<chapter>.log``
    papermill's log of the chapter: every cell's output as it ran;
``<out>/failed/<chapter>.ipynb``
    the partly executed notebook of a chapter that failed (a failure never
    replaces a good notebook of an earlier run);
``<out>/summary.md``, ``<out>/summary.json``
    the closing table.

``--in-place`` (quick profile only) is how ``make book`` refreshes the
committed outputs: each chapter that succeeds replaces ``book/<chapter>.ipynb``;
one that fails leaves the committed notebook as it was.  It also records the
measured times in ``book/_timings.json`` and the table ``book/_timings.md``
that the introduction includes.  The README's copy of that table is rewritten
only with ``--record-timings`` (which also records the times of other runs,
e.g. the paper profile on a GPU), so that ``make book`` never edits the README.

Ctrl-C, SIGTERM (a cancelled CI job) and SIGHUP (a closed terminal) all stop
the run the same way: the running chapter's papermill and kernel are ended,
the summary is written, and the exit code is 128 + the signal (130 for Ctrl-C).

The scorecard page (``book/scorecard.ipynb``) is not a chapter: it is run
last, in the same folder as the executed chapters, so that it gathers their
claims.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import results
from .book import PROFILES as BOOK_PROFILES
from .runs import RunsDirError, atomic_write_bytes, atomic_write_json, check_writable_dir, repo_root

SCORECARD = "scorecard"
KERNEL = "python3"
DEFAULT_TIMEOUT_S = 6 * 3600
PROFILE_KEYS = {"profile", "common", "chapters", "timeout_s"}
TIMINGS_JSON = "book/_timings.json"
TIMINGS_MD = "book/_timings.md"
README_MARKERS = ("<!-- timings:start (written by mcutils.reproduce) -->", "<!-- timings:end -->")
# Columns of the timings table that are always shown, measured or not.
STANDARD_TIMING_COLUMNS = (("quick", "cpu"), ("paper", "gpu"))
_MISSING = object()


class ReproduceError(Exception):
    """A problem with the profile, the chapter list or the options, found before any work."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: stop the run, end the chapter's processes, report."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                     if s is not None)


_LAST_STOP_SIGNAL: dict = {}


def _raise_interrupted(signum, frame):
    _LAST_STOP_SIGNAL["signum"] = int(signum)
    raise Interrupted(signum)


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


def threading_is_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------- the book

@dataclass(frozen=True)
class Page:
    """A notebook of the table of contents: ``doc`` is its path without suffix (``book/03_gaussian``)."""

    doc: str

    @property
    def name(self) -> str:
        return Path(self.doc).name

    def source(self, root: Path) -> Path:
        return root / f"{self.doc}.ipynb"


def find_root(root: str | os.PathLike | None = None) -> Path:
    """The book's checkout: ``root`` if given, else the one mcutils runs from, else the working directory."""
    candidates = [Path(root)] if root else [p for p in (repo_root(), Path.cwd()) if p is not None]
    for path in candidates:
        if (path / "_toc.yml").is_file():
            return path.resolve()
    where = root or Path.cwd()
    raise ReproduceError(f"no _toc.yml in {where}: run from the book's checkout or pass --root")


def toc_docs(root: Path) -> list[str]:
    """Every document of ``_toc.yml`` in reading order (the root first), without suffixes."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")) or {}
    docs: list[str] = []

    def walk(node):
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            if "file" in node:
                docs.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key) or [])

    if "root" in toc:
        docs.append(str(toc["root"]))
    walk(toc)
    return [re.sub(r"\.(ipynb|md)$", "", d) for d in docs]


def toc_notebooks(root: Path) -> list[Page]:
    """The notebook pages of the table of contents (chapters and the scorecard), in order.

    A document with a ``.md`` source is a page of prose; every other entry is a
    notebook, whether or not its file exists yet (a missing one is reported).
    """
    return [Page(d) for d in toc_docs(root) if not (root / f"{d}.md").is_file()]


def toc_chapters(root: Path) -> list[Page]:
    """The chapters: the notebook pages other than the scorecard."""
    return [p for p in toc_notebooks(root) if p.name != SCORECARD]


def notebook_title(path: Path) -> str:
    """The first ``# `` heading of a notebook, or its file name."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.stem
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str  # "" when the cell gives none
    default: Any  # _MISSING when the default is not a literal


def _code_of(source: str) -> str:
    # IPython magics and shell escapes are not Python; a parameters cell should have none.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def notebook_parameters(path: Path) -> dict[str, Parameter]:
    """The names, annotations and literal defaults of a notebook's ``parameters`` cell."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ReproduceError(f"{path.name} must have exactly one cell tagged 'parameters', found {len(cells)}")
    tree = ast.parse(_code_of("".join(cells[0]["source"])))
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets, annotation, value = [node.target], ast.unparse(node.annotation), node.value
        elif isinstance(node, ast.Assign):
            targets, annotation, value = [t for t in node.targets if isinstance(t, ast.Name)], "", node.value
        else:
            continue
        try:
            default = ast.literal_eval(value) if value is not None else _MISSING
        except ValueError:
            default = _MISSING
        for target in targets:
            params[target.id] = Parameter(target.id, annotation, default)
    return params


_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}


def _check_type(where: str, param: Parameter, value) -> None:
    base = re.sub(r"\[.*", "", param.annotation).strip()
    check = _TYPE_CHECKS.get(base)
    if check is not None and not check(value):
        raise ReproduceError(f"{where}: {param.name} must be {param.annotation} (the notebook's parameters "
                             f"cell says so), got {value!r} ({type(value).__name__})")


# --------------------------------------------------------------------------- profiles

@dataclass
class Profile:
    name: str
    path: Path
    common: dict = field(default_factory=dict)
    chapters: dict = field(default_factory=dict)
    timeout_s: float | None = None

    @property
    def chapter_profile_value(self) -> str:
        """What the chapters' ``profile`` parameter is set to (they know quick, paper and custom)."""
        return self.name if self.name in BOOK_PROFILES else "custom"


def load_profile(spec: str, root: Path) -> Profile:
    """``quick``/``paper`` (``profiles/<name>.yaml``) or a path to a profile YAML file."""
    named = root / "profiles" / f"{spec}.yaml"
    path = named if re.fullmatch(r"[A-Za-z0-9_-]+", spec) and named.is_file() else Path(spec)
    if not path.is_file():
        shipped = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise ReproduceError(f"profile {spec!r}: no file {path}; use one of {shipped} or a path to a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReproduceError(f"profile {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ReproduceError(f"profile {path}: expected a mapping with keys {sorted(PROFILE_KEYS)}")
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise ReproduceError(f"profile {path}: unknown key(s) {unknown}; allowed: {sorted(PROFILE_KEYS)}")
    name = str(data.get("profile") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ReproduceError(f"profile {path}: name {name!r} must be letters, digits, '-' or '_' (it names a folder)")
    common = data.get("common") or {}
    chapters = data.get("chapters") or {}
    if not isinstance(common, dict):
        raise ReproduceError(f"profile {path}: 'common' must be a mapping of parameter: value")
    if not isinstance(chapters, dict):
        raise ReproduceError(f"profile {path}: 'chapters' must map chapter names to parameters")
    for chapter, params in chapters.items():
        if params is not None and not isinstance(params, dict):
            raise ReproduceError(f"profile {path}: chapters.{chapter} must be a mapping of parameter: value")
    timeout = data.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ReproduceError(f"profile {path}: timeout_s must be a positive number of seconds, got {timeout!r}")
    return Profile(name, path, dict(common), {k: dict(v or {}) for k, v in chapters.items()}, timeout)


def plan_parameters(profile: Profile, pages: list[Page], root: Path,
                    overrides: dict | None = None) -> dict[str, dict]:
    """The parameters papermill injects into each chapter, checked against its parameters cell.

    ``common`` and ``overrides`` (``--param``) apply to every chapter that has
    the parameter; a name no selected chapter has is an error, and so is a
    chapter-specific name the chapter lacks or a value of the wrong type.
    Values equal to the notebook's own defaults are left out, so a quick run
    injects nothing.
    """
    overrides = overrides or {}
    plan: dict[str, dict] = {}
    used: set[str] = set()
    for page in pages:
        if not page.source(root).is_file():
            continue
        where = f"profile {profile.name}, chapter {page.name}"
        known = notebook_parameters(page.source(root))
        own = profile.chapters.get(page.name, {})
        for name in own:
            if name not in known:
                raise ReproduceError(f"{where}: {name!r} is not a parameter of {page.name} "
                                     f"(its parameters cell defines {sorted(known)})")
        wanted = {**profile.common, **own, **overrides}
        wanted.setdefault("profile", profile.chapter_profile_value)
        injected = {}
        for name, value in wanted.items():
            if name not in known:
                continue
            used.add(name)
            _check_type(where, known[name], value)
            if known[name].default is _MISSING or known[name].default != value \
                    or type(known[name].default) is not type(value):
                injected[name] = value
        plan[page.name] = injected
    chapters_run = [p for p in pages if p.source(root).is_file()]
    if chapters_run:
        for name in [*profile.common, *overrides]:
            if name not in used:
                raise ReproduceError(f"profile {profile.name}: no selected chapter has a parameter {name!r}")
    return plan


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE read as YAML (``seed=3``, ``device=cuda``, ``sizes=[1, 2]``)."""
    if "=" not in text:
        raise ReproduceError(f"--param {text!r}: expected NAME=VALUE")
    name, raw = text.split("=", 1)
    if not name.isidentifier():
        raise ReproduceError(f"--param {text!r}: {name!r} is not a parameter name")
    try:
        return name, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", "") or exc).split())
        raise ReproduceError(f"--param {text!r}: the value is not valid YAML ({problem}); quote strings, "
                             "close brackets, e.g. -p 'seeds=[1, 2]'") from None


def select_pages(pages: list[Page], wanted: str | None) -> list[Page]:
    """Chapters named in ``--chapters`` (comma-separated names, or unique prefixes such as ``03``)."""
    if not wanted:
        return pages
    chosen: list[Page] = []
    for item in [w.strip() for w in wanted.split(",") if w.strip()]:
        matches = [p for p in pages if p.name == item] or [p for p in pages if p.name.startswith(item)]
        if len(matches) != 1:
            names = [p.name for p in pages]
            problem = "matches no chapter" if not matches else f"is ambiguous ({[p.name for p in matches]})"
            raise ReproduceError(f"--chapters: {item!r} {problem}; chapters in _toc.yml: {names}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return [p for p in pages if p in chosen]  # reading order


# --------------------------------------------------------------------------- running one notebook

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


def _first_error(path: Path) -> str:
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


def _fmt_seconds(seconds: float) -> str:
    """``8.5 s``, ``42 s``, ``3 min 05 s``, ``2 h 10 min``."""
    seconds = float(seconds)
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


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
            print(f"\r\033[K{label} {where}, {_fmt_seconds(elapsed)}", end="", file=self.stream, flush=True)
        elif time.monotonic() - self._last_beat >= self.heartbeat_s:
            self._last_beat = time.monotonic()
            print(f"{label} still running: {where}, {_fmt_seconds(elapsed)}", file=self.stream, flush=True)

    def finish(self, label: str, outcome: Outcome) -> None:
        end = "\r\033[K" if self.tty else ""
        detail = f" ({outcome.error})" if outcome.error and not outcome.ok else ""
        print(f"{end}{label} {outcome.status} in {_fmt_seconds(outcome.seconds)}{detail}",
              file=self.stream, flush=True)


_CELL_LINE = re.compile(rb"Executing Cell (\d+)")


def execute_notebook(source: Path, attempt: Path, cwd: Path, parameters: dict, log: Path,
                     timeout_s: float, label: str, progress: Progress, kernel: str = KERNEL) -> tuple[str, float]:
    """Run papermill in a child process; returns (status, seconds). ``attempt`` holds the result."""
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
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
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


# --------------------------------------------------------------------------- timings

def detect_machine() -> tuple[str, str]:
    """("gpu" or "cpu", a description) of the machine the chapters run on."""
    cores = os.cpu_count() or 1
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = " ".join(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    cpu_text = f"{cores} CPU cores" + (f" ({cpu})" if cpu else "")
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) != "" and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []
        except (OSError, subprocess.SubprocessError):
            gpus = []
        if gpus:
            return "gpu", f"{len(gpus)}× {gpus[0]}, {cpu_text}"
    return "cpu", cpu_text


def record_timings(root: Path, profile: str, outcomes: Iterable[Outcome], command: str,
                   machine: tuple[str, str] | None = None, readme: bool = False) -> Path:
    """Merge the successful chapters' times into ``book/_timings.json`` and rewrite ``book/_timings.md``.

    The README's table is rewritten too only with ``readme`` (``--record-timings``).
    """
    kind, description = machine or detect_machine()
    path = root / TIMINGS_JSON
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    column = data.setdefault(profile, {}).setdefault(kind, {})
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for outcome in outcomes:
        if outcome.ok and outcome.chapter != SCORECARD:
            column[outcome.chapter] = {"seconds": round(outcome.seconds, 1), "date": date,
                                       "machine": description, "command": command, "load": outcome.load}
    atomic_write_json(path, data)
    write_timings_tables(root, data, readme=readme)
    return path


def write_timings_tables(root: Path, data: dict | None = None, readme: bool = True) -> None:
    """Rewrite ``book/_timings.md`` and (with ``readme``) the README's timings section from ``book/_timings.json``."""
    atomic_write_bytes(root / TIMINGS_MD, render_timings(root, data).encode())
    if not readme:
        return
    readme = root / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        updated = readme_with_timings(text, render_timings(root, data, links=False))
        if updated != text:
            atomic_write_bytes(readme, updated.encode())


def readme_with_timings(readme: str, table: str) -> str:
    """The README with the text between its timings markers replaced by ``table``."""
    pattern = re.compile(re.escape(README_MARKERS[0]) + r".*?" + re.escape(README_MARKERS[1]), re.S)
    return pattern.sub(lambda _: f"{README_MARKERS[0]}\n{table}{README_MARKERS[1]}", readme)


def render_timings(root: Path, data: dict | None = None, links: bool = True) -> str:
    """The timings table: included by the book's introduction and running page, and in the README."""
    if data is None:
        path = root / TIMINGS_JSON
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    columns = list(STANDARD_TIMING_COLUMNS)
    columns += sorted((p, k) for p, kinds in data.items() for k in kinds if (p, k) not in columns)
    chapters = toc_chapters(root)
    head = ["chapter", *[f"{p} profile, {k.upper()}" for p, k in columns]]
    lines = (["<!-- Written by mcutils.reproduce (record_timings); do not edit by hand. -->", ""] if links else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    totals: list[float | None] = [0.0] * len(columns)
    for page in chapters:
        row = [f"{{doc}}`/{page.doc}`" if links else f"`{page.name}`"]
        for i, (p, k) in enumerate(columns):
            entry = data.get(p, {}).get(k, {}).get(page.name)
            row.append(_fmt_seconds(entry["seconds"]) if entry else "not measured")
            totals[i] = totals[i] + entry["seconds"] if entry and totals[i] is not None else None
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| **all chapters** | " + " | ".join(
        f"**{_fmt_seconds(t)}**" if t is not None and chapters else "—" for t in totals) + " |")
    notes = []
    for p, k in columns:
        entries = [data.get(p, {}).get(k, {}).get(page.name) for page in chapters]
        entries = [e for e in entries if e]
        if not entries:
            notes.append(f"- *{p} profile, {k.upper()}*: not measured yet; run "
                         f"`python -m mcutils.reproduce --profile {p} --record-timings` on such a machine.")
            continue
        machines = sorted({e["machine"] for e in entries})
        dates = sorted({e["date"] for e in entries})
        commands = sorted({e["command"] for e in entries})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        loads = sorted(e["load"] for e in entries if e.get("load") is not None)
        busy = "" if not loads else (f"; 1-minute load average {loads[0]:g}" if loads[0] == loads[-1]
                                     else f"; 1-minute load average {loads[0]:g} to {loads[-1]:g}")
        notes.append(f"- *{p} profile, {k.upper()}*: {'; '.join(machines)}; measured {when} by "
                     + ", ".join(f"`{c}`" for c in commands) + busy + ".")
    lines += ["", "Wall-clock time of each chapter as the batch runner measured it (papermill, kernel "
              "start included):", "", *notes, ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the profile's book

def prepare_profile_book(root: Path, out: Path) -> None:
    """Copy the book's pages, configuration and profiles into ``out``; executed notebooks stay."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, out / name)
    if (root / "profiles").is_dir():
        shutil.copytree(root / "profiles", out / "profiles", dirs_exist_ok=True)
    skip = {"_build", ".ipynb_checkpoints", "__pycache__"}
    for src in (root / "book").rglob("*"):
        rel = src.relative_to(root)
        if any(part in skip for part in rel.parts) or src.is_dir() or src.suffix == ".ipynb":
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out / rel)


def fill_missing_notebooks(root: Path, out: Path, produced: Iterable[str] = ()) -> list[str]:
    """Notebooks this profile has not (successfully) run keep the book's committed ones.

    Returns the chapters whose pages in ``out`` carry the book's outputs rather than this profile's.
    """
    produced = set(produced)
    borrowed = []
    for page in toc_notebooks(root):
        target = out / f"{page.doc}.ipynb"
        if not target.exists() and page.source(root).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(page.source(root), target)
        if page.name != SCORECARD and target.exists() and page.name not in produced:
            borrowed.append(page.name)
    return borrowed


def write_profile_config(out: Path, profile: Profile, produced: list[str], borrowed: list[str]) -> None:
    """Title and footer of the profile's book say which profile produced which pages."""
    config = yaml.safe_load((out / "_config.yml").read_text(encoding="utf-8")) or {}
    config["title"] = f"{config.get('title', 'Book')} ({profile.name} profile)"
    html = config.setdefault("html", {})
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    footer = (f"Built {date} by <code>python -m mcutils.reproduce --profile {profile.name}</code>. "
              f"Outputs produced by the {profile.name} profile: {', '.join(produced) or 'none'}.")
    if borrowed:
        footer += f" Pages not run in this profile carry the book's quick-profile outputs: {', '.join(borrowed)}."
    html["extra_footer"] = f"<p>{footer} Each chapter's first output names its profile.</p>"
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")


def jupyter_book_executable() -> str:
    beside = Path(sys.executable).parent / "jupyter-book"
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if not found:
        raise ReproduceError("jupyter-book is not installed (pip install 'mcutils[book]')")
    return found


def build_book(out: Path, log: Path) -> bool:
    """``jupyter-book build`` of the profile's folder, failing on any warning."""
    cmd = [jupyter_book_executable(), "build", str(out), "-W", "-n", "--keep-going"]
    with open(log, "wb") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    text = log.read_text(encoding="utf-8", errors="replace")
    return done.returncode == 0 and "WARNING" not in text and "ERROR" not in text


# --------------------------------------------------------------------------- the run

def closing_table(outcomes: list[Outcome], markdown: bool = False, width: int = 90) -> str:
    head = ["chapter", "status", "time", "key result (ours vs paper)"]
    rows = [[o.chapter, o.status, _fmt_seconds(o.seconds) if o.status != "missing" else "-",
             o.key_result() if markdown else _shorten(o.key_result(), width)] for o in outcomes]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths], "-" * len(head[3]))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _check_runs_dirs(plan: dict[str, dict], profile: Profile, params: dict | None) -> None:
    """Every ``runs_dir`` a chapter gets must be a writable folder with room, before any chapter runs."""
    for chapter, injected in plan.items():
        value = injected.get("runs_dir")
        if isinstance(value, str) and value:
            try:
                check_writable_dir(value, f"runs_dir (chapter {chapter}, profile {profile.name})")
            except RunsDirError as exc:
                raise ReproduceError(str(exc)) from None


def output_dir_for(root: Path, profile: Profile, output_dir: str | None) -> Path:
    out = Path(output_dir).resolve() if output_dir else root / "reproductions" / profile.name
    book = (root / "book").resolve()
    if out == root or out == book or book in out.parents:
        raise ReproduceError(f"--output-dir {out} would write into the book's own pages; pick a folder "
                             f"outside book/ (the default is reproductions/<profile>/)")
    return out


def run(profile_spec: str, *, chapters: str | None = None, in_place: bool = False,
        timeout_s: float | None = None, output_dir: str | None = None, root: str | None = None,
        params: dict | None = None, build: bool = True, record: bool | None = None,
        dry_run: bool = False, kernel: str = KERNEL, stream=None) -> tuple[list[Outcome], bool]:
    """Run the profile; returns the outcomes and whether the profile's book was built (or not asked for).

    Raises :class:`ReproduceError` for bad options before anything runs.
    """
    stream = stream or sys.stdout
    book_root = find_root(root)
    profile = load_profile(profile_spec, book_root)
    if in_place and profile.name != "quick":
        raise ReproduceError("--in-place runs only the quick profile: book/ carries the quick profile's outputs; "
                             f"the {profile.name} profile goes to reproductions/{profile.name}/")
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                  or not math.isfinite(timeout_s) or timeout_s <= 0):
        raise ReproduceError(f"--timeout must be a positive, finite number of seconds, got {timeout_s}")
    timeout = float(timeout_s or profile.timeout_s or DEFAULT_TIMEOUT_S)
    all_pages = toc_notebooks(book_root)
    all_chapters = [p for p in all_pages if p.name != SCORECARD]
    selected = select_pages(all_chapters, chapters)
    unknown = sorted(set(profile.chapters) - {p.name for p in all_chapters})
    if unknown:
        import difflib
        hints = [f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
                 for name in unknown
                 for close in [difflib.get_close_matches(name, [p.name for p in all_chapters], n=1)]]
        raise ReproduceError(f"profile {profile.name} ({profile.path}) has settings for {', '.join(hints)}, which "
                             f"_toc.yml does not list; chapters: {[p.name for p in all_chapters]}")
    plan = plan_parameters(profile, selected, book_root, params)
    _check_runs_dirs(plan, profile, params)
    scorecard = next((p for p in all_pages if p.name == SCORECARD and p.source(book_root).is_file()), None)
    out = output_dir_for(book_root, profile, output_dir)
    final_root = book_root if in_place else out
    if not dry_run:
        try:
            check_writable_dir(out, "--output-dir")
        except RunsDirError as exc:
            raise ReproduceError(str(exc)) from None
    if dry_run:
        for page in selected:
            injected = plan.get(page.name)
            print(f"{page.name}: " + (json.dumps(injected, sort_keys=True) if injected is not None
                                      else "notebook missing"), file=stream)
        return [], True

    print(f"Profile {profile.name} ({_relative(profile.path, book_root)}): {len(selected)} chapter(s), "
          f"timeout {_fmt_seconds(timeout)} each; "
          + ("executing into book/ (only successes replace the committed notebooks)" if in_place
             else f"results in {_relative(out, book_root)}/"), file=stream, flush=True)
    if not in_place:
        prepare_profile_book(book_root, out)
    progress = Progress(stream)
    outcomes: list[Outcome] = []
    pages = selected + ([scorecard] if scorecard else [])
    for index, page in enumerate(pages, 1):
        label = f"[{index}/{len(pages)}] {page.name}"
        log = out / "logs" / f"{page.name}.log"
        outcome = Outcome(page.name, "missing", parameters=plan.get(page.name, {}), log=_relative(log, book_root))
        if not page.source(book_root).is_file():
            outcome.error = f"{page.doc}.ipynb does not exist"
            progress.finish(label, outcome)
            outcomes.append(outcome)
            continue
        if page.name == SCORECARD and not in_place:
            fill_missing_notebooks(book_root, out)  # the scorecard gathers every chapter of this book
        final = final_root / f"{page.doc}.ipynb"
        attempt = out / "attempts" / f"{page.name}.ipynb"
        status, seconds = execute_notebook(page.source(book_root), attempt, final.parent, outcome.parameters,
                                           log, timeout, label, progress, kernel)
        outcome.status, outcome.seconds = status, seconds
        outcome.load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
        if status == "ok":
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(attempt, final)
            if in_place:
                _set_papermill_paths(final, f"{page.doc}.ipynb")
            outcome.notebook = _relative(final, book_root)
            outcome.claims = results.gather([final])
        else:
            failed = out / "failed" / f"{page.name}.ipynb"
            if attempt.exists():
                failed.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(attempt, failed)
                outcome.claims = results.gather([failed])
            outcome.notebook = _relative(failed, book_root)
            outcome.error = {"timeout": f"stopped after the {_fmt_seconds(timeout)} limit",
                             "interrupted": "interrupted"}.get(status) or _first_error(failed) or _last_line(log)
        progress.finish(label, outcome)
        outcomes.append(outcome)
        if status == "interrupted":
            break

    command = "python -m mcutils.reproduce --profile " + profile.name + (" --in-place" if in_place else "")
    if (record or in_place) and any(o.ok for o in outcomes):
        written = record_timings(book_root, profile.name, outcomes, command, readme=bool(record))
        print(f"Times recorded in {_relative(written, book_root)} and {TIMINGS_MD}"
              + (" and the README" if record else ""), file=stream)

    built = True
    if not in_place and build and all(o.status != "interrupted" for o in outcomes):
        prepare_profile_book(book_root, out)  # again: the pages may have changed (the timings table)
        state_path = out / "state.json"
        state = json.loads(state_path.read_text()) if state_path.is_file() else {"produced": []}
        produced = sorted(set(state["produced"]) | {o.chapter for o in outcomes if o.ok and o.chapter != SCORECARD})
        atomic_write_json(state_path, {"profile": profile.name, "produced": produced})
        borrowed = fill_missing_notebooks(book_root, out, produced)
        write_profile_config(out, profile, produced, borrowed)
        print("Building the book of this profile ...", file=stream, flush=True)
        built = build_book(out, out / "logs" / "build.log")
        where = out / "_build" / "html" / "index.html"
        print(f"Book: {_relative(where, book_root)}" if built else
              f"The book's build failed or warned: see {_relative(out / 'logs' / 'build.log', book_root)}",
              file=stream, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", {
        "profile": profile.name, "in_place": in_place, "timeout_s": timeout,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "chapters": [{**asdict(o), "claims": [asdict(c) for c in o.claims]} for o in outcomes]})
    atomic_write_bytes(out / "summary.md", (f"# {profile.name} profile\n\n" + closing_table(outcomes, markdown=True)
                                            + "\n").encode())
    print("\n" + closing_table(outcomes), file=stream)
    failed = [o.chapter for o in outcomes if not o.ok]
    print(f"\n{len(outcomes) - len(failed)}/{len(outcomes)} notebooks ran; "
          + (f"failed: {', '.join(failed)}" if failed else "none failed")
          + f". Summary: {_relative(out / 'summary.md', book_root)}", file=stream, flush=True)
    return outcomes, built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mcutils.reproduce",
        description="Run the book's chapters under a profile with papermill, then build that profile's book.")
    parser.add_argument("--profile", default="quick", help="quick, paper, or a path to a profile YAML file")
    parser.add_argument("--chapters", help="comma-separated chapter names or prefixes (default: all in _toc.yml)")
    parser.add_argument("--in-place", action="store_true",
                        help="quick profile only: refresh the committed notebooks in book/ (what `make book` does)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per chapter "
                        f"(default: the profile's timeout_s, else {DEFAULT_TIMEOUT_S})")
    parser.add_argument("--output-dir", help="where executed notebooks, logs and the book go "
                        "(default: reproductions/<profile>)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                        help="set a parameter in every chapter that has it, e.g. runs_dir=/content/drive/MyDrive/runs")
    parser.add_argument("--root", help="the book's checkout (default: the one mcutils is installed from, or .)")
    parser.add_argument("--no-build", action="store_true", help="do not build the profile's book at the end")
    parser.add_argument("--record-timings", action="store_true", default=None,
                        help="record the measured times in book/_timings.json and _timings.md and rewrite the "
                        "README's table (--in-place records book/_timings.* but never edits the README)")
    parser.add_argument("--dry-run", action="store_true", help="check the profile and print the parameters only")
    parser.add_argument("--render-timings", action="store_true",
                        help="only rewrite book/_timings.md and the README's table from book/_timings.json")
    parser.add_argument("--kernel", default=KERNEL, help=f"Jupyter kernel (default {KERNEL})")
    args = parser.parse_args(argv)
    try:
        with _stop_signals_raise():
            return _main(args)
    except Interrupted as exc:
        print(f"\ninterrupted ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _main(args) -> int:
    try:
        if args.render_timings:
            write_timings_tables(find_root(args.root))
            print(f"rewrote {TIMINGS_MD} and the README's timings table")
            return 0
        overrides = dict(parse_param(p) for p in args.param)
        outcomes, built = run(args.profile, chapters=args.chapters, in_place=args.in_place, timeout_s=args.timeout,
                              output_dir=args.output_dir, root=args.root, params=overrides,
                              build=not args.no_build, record=args.record_timings, dry_run=args.dry_run,
                              kernel=args.kernel)
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if any(o.status == "interrupted" for o in outcomes):
        return 128 + _LAST_STOP_SIGNAL.get("signum", signal.SIGINT)
    return 0 if all(o.ok for o in outcomes) and built else 1


if __name__ == "__main__":
    sys.exit(main())
