"""Speed of mcutils.simulate against the plain way, and of the three chapters built on it.

Each case runs one ``mcutils.simulate`` call at the scale a chapter uses
(the paper's scale for the Gaussian chain: M up to 10 000, 2000
generations, 1000 runs) and, side by side in the same process, a plain
per-run Python loop that does what the text describes: draw the samples,
refit, repeat.  The loop is timed on a few runs and scaled linearly to the
full number of runs (runs are independent, so the cost is linear in
them); both the measured and the scaled numbers are reported.

Then it executes the three chapters (Theory, Discrete chain, Gaussian
theorem) with papermill in their quick profile, which is their paper-scale
work, and reports each wall time against the target of one minute for the
three together on a 2-core machine.

``python -m benchmarks.run simulate`` (or ``make bench``) runs it;
``python -m benchmarks.bench_simulate`` too.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mcutils import simulate

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ("01_theory", "02_discrete_chain", "03_gaussian")
CHAPTERS_TARGET_S = 60.0
NAIVE_BUDGET_S = 2.0  # time spent on the plain loop per case (it is then scaled up)


# ------------------------------------------------------------ the plain way

def naive_discrete(p0, m, g, runs, rng):
    k = len(p0)
    for _ in range(runs):
        p = np.asarray(p0, dtype=float)
        for _ in range(g):
            draws = rng.choice(k, size=m, p=p)
            p = np.bincount(draws, minlength=k) / m


def naive_gaussian(mean, cov, m, g, runs, rng, policy="replace", ddof=1):
    mean, cov = np.atleast_1d(mean).astype(float), np.atleast_2d(cov).astype(float)
    for _ in range(runs):
        mu, sigma = mean, cov
        pool = []
        for _ in range(g):
            if mu.size == 1:  # the cheap 1-D way, to keep the comparison fair
                x = mu + np.sqrt(sigma[0, 0]) * rng.standard_normal((m, 1))
            else:
                x = rng.multivariate_normal(mu, sigma, size=m)
            pool.append(x)
            if policy == "accumulate":
                data = np.concatenate(pool)
            elif policy == "accumulate-subsample":
                everything = np.concatenate(pool)
                data = everything[rng.choice(len(everything), size=m, replace=False)]
            else:
                data = x
            mu = data.mean(axis=0)
            if mu.size == 1:
                sigma = np.atleast_2d(data.var(ddof=ddof))
            else:
                sigma = np.cov(data, rowvar=False, ddof=ddof)


def naive_regression(d, t, noise_var, g, runs, rng, policy="replace"):
    for _ in range(runs):
        x = rng.standard_normal((t, d))
        w_star = rng.standard_normal(d)
        labels = [x @ w_star + np.sqrt(noise_var) * rng.standard_normal(t)]
        w = np.linalg.lstsq(x, labels[0], rcond=None)[0]
        for _ in range(1, g):
            labels.append(x @ w + np.sqrt(noise_var) * rng.standard_normal(t))
            if policy == "accumulate":
                w = np.linalg.lstsq(np.tile(x, (len(labels), 1)), np.concatenate(labels), rcond=None)[0]
            else:
                w = np.linalg.lstsq(x, labels[-1], rcond=None)[0]


# ------------------------------------------------------------------ timing

def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, fast, naive, n_runs: int) -> dict:
    """Time ``fast()`` (all runs) and ``naive(k)`` on ``k`` runs; scale the latter to ``n_runs``."""
    fast_s = _timed(fast)
    one = _timed(lambda: naive(1))
    k = int(min(n_runs, max(1, NAIVE_BUDGET_S // max(one, 1e-9))))
    naive_k_s = _timed(lambda: naive(k)) if k > 1 else one
    naive_s = naive_k_s / k * n_runs
    row = {"case": name, "runs": n_runs, "simulate_s": round(fast_s, 3), "naive_runs_timed": k,
           "naive_timed_s": round(naive_k_s, 2), "naive_scaled_s": round(naive_s, 1),
           "speedup": round(naive_s / fast_s, 1)}
    print(f"{name:<58} simulate {fast_s:7.3f} s | loop {naive_k_s:6.2f} s on {k:>4} runs "
          f"-> {naive_s:9.1f} s for {n_runs} | x{naive_s / fast_s:,.0f}", flush=True)
    return row


def cases() -> list[dict]:
    zipf = 1 / np.arange(1, 11)
    zipf /= zipf.sum()
    cov3 = np.array([[0.65, 0.11, -0.14], [0.11, 0.64, -0.21], [-0.14, -0.21, 1.53]])
    rng = np.random.default_rng(0)
    rows = [
        compare("discrete_chain K=10 M=1000 G=1000",
                lambda: simulate.discrete_chain(zipf, 1000, 1000, n_runs=400),
                lambda k: naive_discrete(zipf, 1000, 1000, k, rng), 400),
    ]
    for m in (100, 10_000):
        rows.append(compare(f"gaussian_chain 1-D M={m} G=2000 replace",
                            lambda m=m: simulate.gaussian_chain(0.0, 1.0, m, 2000, n_runs=1000),
                            lambda k, m=m: naive_gaussian(0.0, 1.0, m, 2000, k, rng), 1000))
    rows.append(compare("gaussian_chain d=3 M=1000 G=2000 replace",
                        lambda: simulate.gaussian_chain(np.zeros(3), cov3, 1000, 2000, n_runs=500),
                        lambda k: naive_gaussian(np.zeros(3), cov3, 1000, 2000, k, rng), 500))
    for policy in ("accumulate", "accumulate-subsample"):
        rows.append(compare(f"gaussian_chain 1-D M=100 G=1000 {policy}",
                            lambda p=policy: simulate.gaussian_chain(0.0, 1.0, 100, 1000, n_runs=100, policy=p),
                            lambda k, p=policy: naive_gaussian(0.0, 1.0, 100, 1000, k, rng, policy=p), 100))
    for policy in ("replace", "accumulate"):
        rows.append(compare(f"linear_regression_chain d=10 T=100, 100 models {policy}",
                            lambda p=policy: simulate.linear_regression_chain(10, 100, 1.0, 99, n_runs=1000, policy=p),
                            lambda k, p=policy: naive_regression(10, 100, 1.0, 100, k, rng, policy=p), 1000))
    return rows


def time_chapters() -> dict:
    """Execute each chapter with papermill (its quick profile) in a scratch folder and time it."""
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        for chapter in CHAPTERS:
            source = ROOT / "book" / f"{chapter}.ipynb"
            if not source.exists():
                out[chapter] = {"status": "missing"}
                print(f"{chapter:<20} missing", flush=True)
                continue
            cmd = [sys.executable, "-m", "papermill", str(source), str(Path(scratch) / source.name),
                   "-k", "python3", "--cwd", str(ROOT / "book"), "--no-progress-bar"]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            status = "ok" if proc.returncode == 0 else "failed"
            out[chapter] = {"status": status, "wall_s": round(wall, 1)}
            print(f"{chapter:<20} {status:>6} {wall:6.1f} s", flush=True)
    total = sum(v.get("wall_s", 0.0) for v in out.values())
    out["total_s"] = round(total, 1)
    out["target_s"] = CHAPTERS_TARGET_S
    out["within_target"] = bool(total <= CHAPTERS_TARGET_S and all(
        v.get("status") == "ok" for k, v in out.items() if k in CHAPTERS))
    print(f"three chapters together: {total:.1f} s (target {CHAPTERS_TARGET_S:.0f} s)", flush=True)
    return out


def main() -> dict:
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work slows both sides)")
    rows = cases()
    chapters = time_chapters()
    speedups = [r["speedup"] for r in rows]
    summary = (f"simulate vs per-run loop: x{min(speedups):,.0f} to x{max(speedups):,.0f}; "
               f"chapters 01-03: {chapters['total_s']} s (target {CHAPTERS_TARGET_S:.0f} s)")
    print(summary)
    return {"summary": summary, "cases": rows, "chapters": chapters,
            "load_average_1min": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    main()
