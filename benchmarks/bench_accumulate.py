"""The accumulate-vs-replace chapter at quick-profile scale, against its 4-minute target.

Executes ``book/07_accumulate.ipynb`` with papermill, as ``make book`` runs it
(kernel start included), twice:

1. *cold*: an empty runs folder, so every language-model chain is trained and
   generated (the tiny pre-trained OPT comes from its cache, as on any machine
   that has built it once);
2. *warm*: the same runs folder again, so the chains are read back and only
   the numpy sections compute.

It also sums the engine's own per-generation ``timing.json`` of each chain,
which shows where the cold run's time goes.  The load average is recorded
beside the times, since other work on the same cores slows everything.

``python -m benchmarks.run accumulate`` (or ``make bench``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "07_accumulate"
TARGET_S = 240.0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_chapter(workdir: Path, runs_dir: Path) -> float:
    """Wall-clock seconds of papermill on the chapter, writing into ``workdir`` (the book is left untouched)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg",
               TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "papermill", str(ROOT / "book" / f"{CHAPTER}.ipynb"),
               str(workdir / f"{CHAPTER}.ipynb"), "-k", "python3", "--cwd", str(ROOT / "book"),
               "--log-level", "WARNING", "-p", "runs_dir", str(runs_dir)]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def chain_seconds(runs_dir: Path) -> dict:
    """Seconds the engine recorded per chain (sum over generations of ``timing.json``'s ``total_s``).

    A chain that adopted its generation 0 from a sibling carries the sibling's
    timing for it, so generation 0 is counted once per chain here.
    """
    out = {}
    for run in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        totals = [json.loads(t.read_text())["total_s"] for t in sorted(run.glob("gen_*/timing.json"))]
        out[run.name] = {"generations": len(totals), "seconds": round(sum(totals), 1)}
    return out


def main() -> dict:
    result = {"target_s": TARGET_S, "cpu_count": os.cpu_count(), "load_average_start": _load()}
    with tempfile.TemporaryDirectory(prefix="bench_accumulate_") as tmp:
        tmp = Path(tmp)
        runs_dir = tmp / "runs"
        print(f"executing {CHAPTER} with an empty runs folder ...", flush=True)
        cold = round(time_chapter(tmp, runs_dir), 1)
        print(f"  cold: {cold} s", flush=True)
        result["chains"] = chain_seconds(runs_dir)
        print(f"executing {CHAPTER} again, reading the chains back ...", flush=True)
        warm = round(time_chapter(tmp, runs_dir), 1)
        print(f"  warm: {warm} s", flush=True)
    result.update(cold_s=cold, warm_s=warm, within_target=cold < TARGET_S, load_average_end=_load())
    result["summary"] = (f"{CHAPTER}: {cold:.0f} s with an empty runs folder, {warm:.0f} s reading the chains back "
                         f"(target < {TARGET_S:.0f} s: {'met' if cold < TARGET_S else 'MISSED'}); "
                         f"load average {result['load_average_start'][0]} -> {result['load_average_end'][0]}")
    print(result["summary"])
    return result


if __name__ == "__main__":
    main()
