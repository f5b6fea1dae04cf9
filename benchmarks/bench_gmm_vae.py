"""The GMM and VAE chapters at quick-profile scale, against their 3-minute target.

Measures, on this machine as it is (the load average is recorded beside the
times, since other work on the same cores slows everything):

1. one GMM generation fitted by scikit-learn's ``GaussianMixture`` (one run at
   a time) against the batched EM of ``mcutils.gmm.fit_em`` (all runs at
   once), both inside ``gmm_chain`` at N = 1000: the reason the chapter uses
   the batched EM;
2. both chapters executed end to end with papermill, as ``make book`` runs
   them (kernel start included), the VAE with an empty runs folder so that
   every generation is trained.

``python -m benchmarks.run gmm_vae`` (or ``make bench``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mcutils import gmm

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0
CHAPTERS = ("04_gmm", "05_vae")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_gmm_backends(n_samples: int = 1000, n_runs: int = 5, n_generations: int = 20) -> dict:
    """Seconds per generation per run for scikit-learn and for the batched EM."""
    out = {}
    for backend in gmm.BACKENDS:
        start = time.perf_counter()
        gmm.gmm_chain(n_samples, n_generations, n_runs=n_runs, seed=0, backend=backend)
        seconds = time.perf_counter() - start
        out[backend] = round(1000 * seconds / (n_runs * (n_generations + 1)), 2)
    return {"ms_per_fit": out, "speedup": round(out["sklearn"] / out["numpy"], 1),
            "setting": f"N={n_samples}, {n_runs} runs, {n_generations} generations"}


def time_chapter(name: str, workdir: Path) -> float:
    """Wall-clock seconds of ``papermill book/<name>.ipynb`` into ``workdir`` (the book is left untouched)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg")
    command = [sys.executable, "-m", "papermill", str(ROOT / "book" / f"{name}.ipynb"),
               str(workdir / f"{name}.ipynb"), "-k", "python3", "--cwd", str(ROOT / "book"),
               "--log-level", "WARNING", "-p", "runs_dir", str(workdir / "runs")]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> dict:
    result = {"target_s": TARGET_S, "cpu_count": os.cpu_count(), "load_average_start": _load()}
    print("GMM fit, scikit-learn vs batched EM ...", flush=True)
    result["gmm_fit"] = time_gmm_backends()
    print(f"  {result['gmm_fit']}", flush=True)
    times = {}
    with tempfile.TemporaryDirectory(prefix="bench_gmm_vae_") as tmp:
        for name in CHAPTERS:
            print(f"executing {name} (quick profile) ...", flush=True)
            times[name] = round(time_chapter(name, Path(tmp)), 1)
            print(f"  {name}: {times[name]} s", flush=True)
    total = round(sum(times.values()), 1)
    result.update(chapters_s=times, total_s=total, within_target=total < TARGET_S,
                  load_average_end=_load())
    result["summary"] = (f"04_gmm {times['04_gmm']:.0f} s + 05_vae {times['05_vae']:.0f} s = {total:.0f} s "
                         f"(target < {TARGET_S:.0f} s: {'met' if total < TARGET_S else 'MISSED'}); "
                         f"batched EM {result['gmm_fit']['speedup']}x faster than scikit-learn per fit; "
                         f"load average {result['load_average_start'][0]} -> {result['load_average_end'][0]}")
    print(result["summary"])
    return result


if __name__ == "__main__":
    main()
