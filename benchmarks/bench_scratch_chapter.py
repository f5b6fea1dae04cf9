"""Wall time of chapter 07's from-scratch section: exactly its chains, from an empty runs folder.

``python -m benchmarks.bench_scratch_chapter [--jobs 2]`` runs
:func:`mcutils.lm.scratch.chapter_chains` ("quick") through
:func:`mcutils.lm.scratch.run_scratch_chains` at one torch thread a process
(the chapter's setting) in a fresh temporary runs folder, prints the wall time
and every chain's test cross-entropy per generation, and writes them to
``benchmarks/scratch_chapter_timing.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", default=None, help="use this runs folder (must be empty) and keep it")
    args = parser.parse_args(argv)
    tick = time.perf_counter()
    import torch
    torch.set_num_threads(1)
    from mcutils.lm import scratch

    pairs = scratch.chapter_chains("quick")
    with tempfile.TemporaryDirectory() as scratch_dir:
        runs_dir = Path(args.keep) if args.keep else Path(scratch_dir)
        results = scratch.run_scratch_chains(pairs, jobs=args.jobs, runs_dir=runs_dir, device="cpu")
        wall = time.perf_counter() - tick
        record = {"wall_s": wall, "jobs": args.jobs, "torch_threads": 1, "chains": []}
        for result in results:
            s = result.settings
            record["chains"].append({
                "policy": s.policy, "temperature": s.temperature, "run_name": result.run_dir.name,
                "test_cross_entropy": result.series("test_cross_entropy").tolist(),
                "synthetic_true_cross_entropy": result.series("synthetic", "true_cross_entropy", "mean").tolist(),
                "rare_word_survival": result.series("synthetic", "tail", "rare_word_survival").tolist(),
                "rare_transition_survival": result.series("synthetic", "tail", "rare_transition_survival").tolist(),
                "non_word_token_share": result.series("synthetic", "true_cross_entropy",
                                                      "non_word_token_share").tolist(),
                "source_test_cross_entropy": result.metrics[0].get("source_test_cross_entropy"),
                "generation_seconds": [json.loads((result.run_dir / f"gen_{g:02d}" / "timing.json").read_text())
                                       ["total_s"] for g in range(len(result.metrics))]})
    out = Path(__file__).resolve().parent / "scratch_chapter_timing.json"
    out.write_text(json.dumps(record, indent=1))
    print(f"wall {wall:.1f} s with {args.jobs} processes at 1 torch thread")
    for c in record["chains"]:
        print(f"{c['policy']:>22} T={c['temperature']:<4g}", " ".join(f"{x:.3f}" for x in c["test_cross_entropy"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
