"""The command line: ``python -m mcutils.reproduce`` and the ``mcutils-reproduce`` entry point.

Exit codes: 0 every chapter ran (and the profile's book built), 1 some did
not, 2 bad options (one line on stderr, nothing run), 128 + the signal when
stopped by Ctrl-C (130), SIGTERM or SIGHUP.
"""
from __future__ import annotations

import argparse
import signal
import sys

from .common import ReproduceError
from .execute import _LAST_STOP_SIGNAL, KERNEL, Interrupted, _stop_signals_raise
from .profiles import DEFAULT_TIMEOUT_S, parse_param
from .runner import run
from .timings import TIMINGS_MD, write_timings_tables
from .toc import find_root


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcutils.reproduce",
        description="Run the book's chapters under a profile with papermill, then build that profile's book.")
    parser.add_argument("--profile", default="quick", help="quick, paper, or a path to a profile YAML file")
    parser.add_argument("--chapters", help="comma-separated chapter names or prefixes (default: all in _toc.yml)")
    parser.add_argument("--in-place", action="store_true",
                        help="quick profile only: refresh the committed notebooks in book/ (what `make book` does)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per chapter "
                        f"(default: the profile's timeout_s, else {DEFAULT_TIMEOUT_S})")
    parser.add_argument("--output-dir", help="where executed notebooks, logs and the book go "
                        "(default: reproductions/<profile>)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                        help="set a parameter in every chapter that has it, e.g. runs_dir=/content/drive/MyDrive/runs")
    parser.add_argument("--root", help="the book's checkout (default: the one mcutils is installed from, or .)")
    parser.add_argument("--no-build", action="store_true", help="do not build the profile's book at the end")
    parser.add_argument("--record-timings", action="store_true", default=None,
                        help="run every chapter from scratch (an empty runs folder and model cache) and record "
                        "the measured times in book/_timings.json, _timings.md and the README's table")
    parser.add_argument("--dry-run", action="store_true", help="check the profile and print the parameters only")
    parser.add_argument("--render-timings", action="store_true",
                        help="only rewrite book/_timings.md and the README's table from book/_timings.json")
    parser.add_argument("--kernel", default=KERNEL, help=f"Jupyter kernel (default {KERNEL})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with _stop_signals_raise():
            return _main(args)
    except Interrupted as exc:
        print(f"\ninterrupted ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _main(args) -> int:
    try:
        if args.render_timings:
            write_timings_tables(find_root(args.root))
            print(f"rewrote {TIMINGS_MD} and the README's timings table")
            return 0
        overrides = dict(parse_param(p) for p in args.param)
        outcomes, built = run(args.profile, chapters=args.chapters, in_place=args.in_place, timeout_s=args.timeout,
                              output_dir=args.output_dir, root=args.root, params=overrides,
                              build=not args.no_build, record=args.record_timings, dry_run=args.dry_run,
                              kernel=args.kernel)
    except ReproduceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if any(o.status == "interrupted" for o in outcomes):
        return 128 + _LAST_STOP_SIGNAL.get("signum", signal.SIGINT)
    return 0 if all(o.ok for o in outcomes) and built else 1
