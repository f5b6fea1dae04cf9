"""The runs folder: where chains keep their generations, written atomically.

Contract (the design's): ``<runs_dir>/<run name>/gen_<NN>/metrics.json`` is
written only when generation ``NN`` is complete, by writing a temporary file
and renaming it, so a killed run never leaves a half-written ``metrics.json``
and a rerun with the same settings skips every complete generation.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .validate import UserError

METRICS = "metrics.json"
LOCK = ".lock"
# Errors of a folder the user can fix: no room, read-only, no permission.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                errno.EFBIG}


class RunsDirError(UserError):
    """A runs folder that cannot be used: not a folder, not writable, or full."""


class CorruptRunError(UserError):
    """A file of a run that is damaged or does not match what its generation recorded."""


class RunLockedError(UserError):
    """Another process is writing the same chain."""


def repo_root() -> Path | None:
    """The book's checkout when mcutils runs from one (editable install), else None."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "_toc.yml").exists() and (here / "book").is_dir() else None


def default_runs_dir(profile: str = "quick") -> Path:
    """``$MCUTILS_RUNS_DIR``, else ``<repo>/runs/<profile>``, else ``./runs/<profile>``.

    Independent of the working directory inside the repo, because papermill
    runs in the caller's directory and nbval / Jupyter Book in the notebook's.
    """
    env = os.environ.get("MCUTILS_RUNS_DIR")
    if env:
        return Path(env).expanduser() / profile
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "runs" / profile


def resolve_runs_dir(runs_dir: str | os.PathLike | None, profile: str = "quick") -> Path:
    """A chapter's ``runs_dir`` parameter: empty means :func:`default_runs_dir`."""
    if runs_dir in (None, ""):
        return default_runs_dir(profile)
    return Path(runs_dir).expanduser()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; a damaged one raises :class:`CorruptRunError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CorruptRunError(f"{path} is damaged (not valid JSON: {exc}); delete it (or the generation folder "
                              f"holding it) to recompute it") from None


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the folder itself: usable before any work, locked while written ---------------------

MIN_FREE_BYTES = 1 << 20  # a runs folder with less room than this is refused before any work


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_writable_dir(path: str | os.PathLike, what: str = "runs_dir", min_free_bytes: int | None = None) -> Path:
    """``path`` as a folder this process can write, with room; else :class:`RunsDirError` naming ``what``.

    Creates the folder (and its parents) if needed.  The write test creates
    and removes an empty file, so it also catches read-only file systems and
    permissions that ``os.access`` misjudges (root, ACLs, network file systems).
    """
    path = Path(path).expanduser()
    advice = f"pass another folder as {what}, or fix this one"
    if path.exists() and not path.is_dir():
        raise RunsDirError(f"{what} {path} is a file, not a folder; {advice}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunsDirError(f"{what} {path} cannot be created ({_describe(exc)}); {advice}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunsDirError(f"{what} {path} is not writable ({_describe(exc)}); {advice}") from None
    needed = MIN_FREE_BYTES if min_free_bytes is None else min_free_bytes
    free = shutil.disk_usage(path).free
    if free < needed:
        raise RunsDirError(f"{what} {path} has {_size(free)} free, less than the {_size(needed)} needed; "
                           f"free some space or {advice}")
    return path


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def write_error(exc: OSError, folder: str | os.PathLike, what: str = "runs_dir") -> RunsDirError | None:
    """The user-facing error for an ``OSError`` met while writing into ``folder`` (None: not a folder problem)."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    where = exc.filename or folder
    return RunsDirError(f"writing {where} failed ({_describe(exc)}); free space in or fix {what} {folder}, "
                        "then rerun (complete generations are kept)")


_SCRATCH_FILE = re.compile(r"^\..+\.tmp$")
_SCRATCH_DIR = re.compile(r"^\.(model\.|.+\.copy$)")


def remove_scratch(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the scratch files a failed or killed writer left in ``run_dir`` (hold its lock first)."""
    run_dir = Path(run_dir)
    removed = []
    if not run_dir.is_dir():
        return removed
    for path in sorted(run_dir.rglob(".*"), key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_dir() and not path.is_symlink() and _SCRATCH_DIR.match(path.name):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            elif path.is_file() and _SCRATCH_FILE.match(path.name):
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    return removed


@contextmanager
def locked(run_dir: str | os.PathLike, what: str = "chain"):
    """Hold ``<run_dir>/.lock`` (an ``flock``, released when the process ends, even by SIGKILL).

    A second process on the same folder is refused at once with
    :class:`RunLockedError`, naming the holder's process id.
    """
    import fcntl
    import socket

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunLockedError(f"{run_dir} is being written by another process ({holder}); wait for it to "
                                 f"finish (a rerun then reads its {what}), or stop it and rerun") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # releases the lock


def settings_hash(settings: dict) -> str:
    """A short stable hash of JSON-serialisable settings."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def run_name(prefix: str, settings: dict) -> str:
    """A readable run name that changes whenever a setting does."""
    return f"{prefix}-{settings_hash(settings)}"


def generation_dir(run_dir: str | os.PathLike, index: int) -> Path:
    return Path(run_dir) / f"gen_{index:02d}"


def is_complete(run_dir: str | os.PathLike, index: int) -> bool:
    return (generation_dir(run_dir, index) / METRICS).is_file()


def load_metrics(run_dir: str | os.PathLike, n_generations: int | None = None) -> list[dict]:
    """The metrics of every complete generation, in order, stopping at the first gap.

    ``n_generations`` is the last index read (``None``: all).  A damaged
    file raises :class:`CorruptRunError` naming it.
    """
    out = []
    index = 0
    while is_complete(run_dir, index) and (n_generations is None or index <= n_generations):
        out.append(read_json(generation_dir(run_dir, index) / METRICS))
        index += 1
    return out


# -- resuming a chain: one mechanism for the VAE and the language model ------------------

def delete_advice(run_dir: str | os.PathLike, index: int) -> str:
    """What to delete so that generation ``index`` (and every later one, made from it) is recomputed."""
    run_dir = Path(run_dir)
    names = sorted(p.name for p in run_dir.glob("gen_*") if p.is_dir() and p.name >= f"gen_{index:02d}")
    names = names or [f"gen_{index:02d}"]
    listed = names[0] if len(names) == 1 else f"{names[0]} to {names[-1]}"
    return (f"delete {run_dir / names[0]}" + (" and the later generation folders" if len(names) > 1 else "")
            + f" ({listed}) to recompute {'it' if len(names) == 1 else 'them'}")


def complete_generations(run_dir: str | os.PathLike, n_models: int, check=None) -> int:
    """How many of generations ``0 .. n_models - 1`` are complete (a prefix), each checked by ``check``.

    A generation is complete once its ``metrics.json`` exists (the contract
    above); a chain resumes at the first one that is not.  A complete
    generation *after* an incomplete one was made from data that is gone, so
    it raises :class:`CorruptRunError` with what to delete.  ``check(index)``
    (optional) verifies one complete generation and raises
    :class:`CorruptRunError` when it is not usable.
    """
    run_dir = Path(run_dir)
    complete = [is_complete(run_dir, g) for g in range(n_models)]
    n_done = complete.index(False) if False in complete else n_models
    stray = [g for g in range(n_done, n_models) if complete[g]]
    if stray:
        raise CorruptRunError(
            f"{run_dir}: gen_{stray[0]:02d} is complete but gen_{n_done:02d} before it is not, so it was made "
            f"from data that is gone; {delete_advice(run_dir, n_done)}")
    if check is not None:
        for g in range(n_done):
            check(g)
    return n_done


def check_generation_label(run_dir: str | os.PathLike, index: int) -> dict:
    """Generation ``index``'s metrics, which must say they are generation ``index`` (not a copied file)."""
    path = generation_dir(run_dir, index) / METRICS
    metrics = read_json(path)
    if not isinstance(metrics, dict) or metrics.get("generation") != index:
        said = metrics.get("generation") if isinstance(metrics, dict) else metrics
        raise CorruptRunError(f"{path} says it is generation {said!r}, not {index} (copied from another "
                              f"folder?); {delete_advice(run_dir, index)}")
    return metrics


@contextmanager
def writing(run_dir: str | os.PathLike, what: str = "chain"):
    """Hold the chain's lock (:func:`locked`) and clear a killed writer's scratch files on entry and exit."""
    with locked(run_dir, what) as lock:
        remove_scratch(run_dir)  # what a killed run left; safe, the folder is ours now
        try:
            yield lock
        finally:
            remove_scratch(run_dir)
