"""The chapters' measured times: ``book/_timings.json``, the table ``book/_timings.md``, the README's copy.

:func:`record_timings` merges a run's successful chapters into the JSON file
under ``<profile>/<cpu|gpu>``; :func:`render_timings` draws the table from it
(the book's introduction includes it), and the README's section between
:data:`README_MARKERS` is rewritten only when asked (``--record-timings`` or
``--render-timings``), so that ``make book`` never edits the README.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from ..runs import atomic_write_bytes, atomic_write_json
from .common import fmt_seconds
from .execute import Outcome
from .toc import SCORECARD, toc_chapters

TIMINGS_JSON = "book/_timings.json"
TIMINGS_MD = "book/_timings.md"
README_MARKERS = ("<!-- timings:start (written by mcutils.reproduce) -->", "<!-- timings:end -->")
# Columns of the timings table that are always shown, measured or not.
STANDARD_TIMING_COLUMNS = (("quick", "cpu"), ("paper", "gpu"))


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
            row.append(fmt_seconds(entry["seconds"]) if entry else "not measured")
            totals[i] = totals[i] + entry["seconds"] if entry and totals[i] is not None else None
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| **all chapters** | " + " | ".join(
        f"**{fmt_seconds(t)}**" if t is not None and chapters else "—" for t in totals) + " |")
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
