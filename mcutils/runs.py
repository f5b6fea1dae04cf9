"""The runs folder: where chains keep their generations, written atomically.

Contract (the design's): ``<runs_dir>/<run name>/gen_<NN>/metrics.json`` is
written only when generation ``NN`` is complete, by writing a temporary file
and renaming it, so a killed run never leaves a half-written ``metrics.json``
and a rerun with the same settings skips every complete generation.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS = "metrics.json"


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
    return json.loads(Path(path).read_text(encoding="utf-8"))


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
    """The metrics of every complete generation, in order, stopping at the first gap."""
    out = []
    index = 0
    while is_complete(run_dir, index) and (n_generations is None or index <= n_generations):
        out.append(read_json(generation_dir(run_dir, index) / METRICS))
        index += 1
    return out
