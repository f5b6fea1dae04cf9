"""`make bench`: run every benchmarks/bench_*.py and write benchmarks/RESULTS.md.

Each module has ``main() -> dict``; speed-ups are measured side by side inside
one module's run (machines are noisy, so only ratios taken together count).
``python -m benchmarks.run [name ...]`` runs a subset (e.g. ``simulate lm``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_summary() -> dict:
    import numpy
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__,
    }
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                        capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return info


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {available()})")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="where to write the report")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")

    report = {"machine": machine_summary(), "command": "make bench  # python -m benchmarks.run " + " ".join(args.names), "results": {}}
    failed = []
    for name in names:
        print(f"\n=== benchmark: {name} ===", flush=True)
        start = time.perf_counter()
        try:
            result = importlib.import_module(f"benchmarks.bench_{name}").main()
        except Exception as exc:  # report and carry on with the others
            failed.append(name)
            result = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"benchmark {name} failed: {result['error']}", file=sys.stderr)
        result = dict(result or {})
        result["wall_s"] = round(time.perf_counter() - start, 1)
        report["results"][name] = result

    lines = ["# Benchmark results", "", "Produced by `" + report["command"].strip() + "`.", "",
             "## Machine", "", "```json", json.dumps(report["machine"], indent=2), "```", ""]
    for name, result in report["results"].items():
        lines += [f"## {name}", "", "```json", json.dumps(result, indent=2, default=str), "```", ""]
    Path(args.results).write_text("\n".join(lines))

    print("\n=== summary ===")
    for name, result in report["results"].items():
        headline = result.get("summary") or result.get("error") or ""
        print(f"{name:>12}: {headline} ({result['wall_s']} s)")
    print(f"written to {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
