"""Shared helpers of the robustness tests (tests/test_robust_*.py): small file systems, fresh interpreters.

Kept as a test module of its own (no tests) so the other files can import it
without a package or a conftest.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m"):
    """A real tmpfs of ``size`` at ``where`` (root only; skips the test otherwise)."""
    where.mkdir(parents=True, exist_ok=True)
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount_read_only(where: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a file into ``folder`` until fewer than ``leave`` bytes are free (a full disk)."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        chunk = b"\0" * 65536
        try:
            while shutil.disk_usage(folder).free > leave + len(chunk):
                fh.write(chunk)
                fh.flush()
            while shutil.disk_usage(folder).free > leave:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def read_only_dir(folder: Path):
    """Make ``folder`` unwritable for this process: chmod for a normal user, a read-only remount for root."""
    if can_mount():
        remount_read_only(folder)
    else:
        os.chmod(folder, 0o555)


def python(code: str, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=environment)


# Loads MNIST in a fresh interpreter and prints how long the failure took, then the message.
MNIST_TIMING_SCRIPT = """
import time
from mcutils import vae
start = time.perf_counter()
try:
    vae.load_mnist()
except vae.DataUnavailableError as exc:
    print(f"{time.perf_counter() - start:.2f}")
    print(exc)
else:
    print("loaded")
"""
