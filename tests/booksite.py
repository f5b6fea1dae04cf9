"""The book built once per test session from the committed notebooks (for test_build and test_browser)."""
from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mcutils.reproduce import jupyter_book_executable

ROOT = Path(__file__).resolve().parents[1]
JB_FLAGS = ["-W", "-n", "--keep-going"]


@dataclass(frozen=True)
class Site:
    returncode: int
    log: str
    html: Path

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)]


@functools.lru_cache(maxsize=None)
def build_site() -> Site:
    """``jupyter-book build`` of the checkout into a temporary folder (outputs as committed; nothing runs)."""
    out = Path(tempfile.mkdtemp(prefix="mcbook-site-"))
    atexit.register(shutil.rmtree, out, True)
    cmd = [jupyter_book_executable(), "build", str(ROOT), "--path-output", str(out), *JB_FLAGS]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    return Site(done.returncode, done.stdout + done.stderr, out / "_build" / "html")
