"""``python -m mcutils.lm``: run or resume a language-model chain outside notebooks.

The defaults are the quick profile (the small OPT, synthetic language, offline,
two CPU cores): with no flags this is the OPT-125m chapter's setting 1 for its
first seed, the same chain (same run name, same numbers on the same machine:
one torch thread on the CPU, as the chapter) for the chapter's 6 models.  ``--profile paper`` is the paper's setting 1 (OPT-125m on
wikitext-2-raw-v1, from the hub).  Works under ``torchrun`` and ``accelerate
launch``: training runs data-parallel, generation and scoring are sharded.

Examples::

    python -m mcutils.lm                                  # the OPT-125m chapter's quick setting 1, first seed
    python -m mcutils.lm --policy replace --real-fraction 0.1 --epochs 10
    python -m mcutils.lm --profile paper --device cuda    # OPT-125m on wikitext-2
    torchrun --nproc-per-node 2 -m mcutils.lm --n-generations 1
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
import typing

from .. import validate
from .hub import check_hub
from .settings import (PROFILES, ChainSettings, check_n_generations, check_precision, describe, field_kind,
                       for_profile, is_spec, overrides_from_dict)

# n_generations when --n-generations is not given: what the profile's OPT-125m chapter runs.
CHAPTER_GENERATIONS = {"quick": 5, "paper": 9, "smoke": 2, "small": 4}

NESTED_HELP = textwrap.fill(
    "The nested settings language, corpus and tiny (the synthetic language, its corpus and the tiny model) "
    "are set in a --settings file only, as objects, e.g. {\"tiny\": {\"n_layers\": 4}}.", 79)


def chain_flag_fields() -> list[dataclasses.Field]:
    """The fields of :class:`ChainSettings` that get a flag: all but the nested specs."""
    return [f for f in dataclasses.fields(ChainSettings) if not is_spec(ChainSettings, f)]


def _flags_dataclass() -> type:
    """ChainSettings' flat fields as a dataclass for ``HfArgumentParser``: one flag each.

    Every flag defaults to None, "not given", so that a value from ``--settings``
    or the profile is not replaced by a default; the help text comes from the
    field's metadata, with what it allows and each profile's default.  Only
    "help" and "choices" are passed on: ``HfArgumentParser`` hands all metadata to
    ``add_argument``, and the bounds are checked by ChainSettings itself.
    """
    profiles = {name: make() for name, make in PROFILES.items()}
    specs = []
    for f in chain_flag_fields():
        kind, _ = field_kind(ChainSettings, f)
        defaults = {name: getattr(s, f.name) for name, s in profiles.items()}
        if len(set(map(repr, defaults.values()))) == 1:
            default = f"default: {defaults['quick']}"
        else:
            default = "default: " + ", ".join(f"{name} {value}" for name, value in defaults.items())
        metadata = {"help": f"{describe(ChainSettings, f)}; {default}".replace("%", "%%")}
        if "choices" in f.metadata:
            metadata["choices"] = list(f.metadata["choices"])
        specs.append((f.name, typing.Optional[kind], dataclasses.field(default=None, metadata=metadata)))
    return dataclasses.make_dataclass("ChainFlags", specs, namespace={
        "_argument_group_name": "chain settings (the run name hashes them; given flags win over --settings)"})


def build_parser() -> argparse.ArgumentParser:
    """The chain-setting flags generated from ChainSettings' fields, then the options of a run."""
    from transformers import HfArgumentParser  # no torch: about a second

    p = HfArgumentParser(_flags_dataclass(), prog="python -m mcutils.lm", description=__doc__.split("\n\n")[0],
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=NESTED_HELP + "\n\nExamples::" + __doc__.split("Examples::")[1])
    p.add_argument("--profile", default="quick", choices=["quick", "paper", "smoke"],
                   help="the defaults of every setting (default: quick; smoke: toy sizes for tests)")
    p.add_argument("--settings", default=None, metavar="JSON",
                   help="a JSON file of ChainSettings fields applied over the profile (flags given explicitly "
                        "win); the only way to set language, corpus and tiny")
    p.add_argument("--runs-dir", default="", help="runs folder (default: runs/<profile> in the checkout)")
    p.add_argument("--n-generations", type=int, default=None,
                   help="refits after generation 0 (default: the profile's chapter, quick 5 (6 models), "
                        "paper 9 (the paper's 10 models a chain))")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (numbers are reproducible for a given count; default: 1 on the CPU, "
                        "as the chapters)")
    p.add_argument("--keep-models", action="store_true", help="keep every generation's model (disk!)")
    p.add_argument("--no-last-data", action="store_true",
                   help="the last model does not continue the training blocks (its data would train no model; "
                        "the chapters do so): one beam-search pass less, and a longer run makes them first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for action in p._actions:  # HfArgumentParser makes --real_fraction and --real-fraction: show the dashes first
        action.option_strings.sort(key=lambda option: "_" in option)
    return p


def given_flags(args: argparse.Namespace) -> dict:
    """The chain settings given on the command line (a flag left out is None: not given)."""
    return {f.name: getattr(args, f.name) for f in chain_flag_fields() if getattr(args, f.name) is not None}


def settings_file_overrides(path: str | None) -> dict:
    """The settings of a ``--settings`` JSON file, as ChainSettings keyword arguments.

    Keys are checked against ChainSettings' fields and the nested specs
    (language, corpus, tiny) are built from objects, as by
    :meth:`ChainSettings.from_dict`; errors name the file.
    """
    if path is None:
        return {}
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read())
        return overrides_from_dict(ChainSettings, data)
    except (OSError, ValueError) as exc:  # ParameterError is a ValueError
        raise validate.ParameterError(f"--settings {path}: {exc}") from None


def _error(exc: BaseException) -> int:
    """One line for an error the user can fix; 2 for a bad setting, 1 for a problem met while running."""
    print(f"error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, validate.ParameterError) else 1


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except validate.UserError as exc:
        return _error(exc)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume (complete generations are kept)", file=sys.stderr)
        return 130


def _main(args) -> int:
    try:
        overrides = settings_file_overrides(args.settings)
        overrides.update(given_flags(args))
        settings = for_profile(args.profile, **overrides)
        if args.n_generations is None:
            args.n_generations = CHAPTER_GENERATIONS[args.profile]
        check_n_generations(args.n_generations)
        if args.runs_dir:
            from pathlib import Path
            where = Path(args.runs_dir).expanduser()
            if where.exists() and not where.is_dir():
                raise validate.ParameterError(f"--runs-dir {where} is a file, not a folder; pass a folder")
        check_hub(settings)                      # no torch yet: answers in about a second
        if args.threads is not None:
            validate.integer("threads", args.threads, minimum=1, maximum=4096)
        device = validate.resolve_device(args.device)
        check_precision(settings.precision, device)
        if args.threads is None and device == "cpu":
            args.threads = 1  # the chapters' count: the same numbers as the book's
        if args.threads is not None:
            import torch
            torch.set_num_threads(args.threads)
    except validate.UserError as exc:
        return _error(exc)

    from . import dist
    from .chain import run_chain

    result = run_chain(settings, args.n_generations, runs_dir=args.runs_dir, profile=args.profile,
                       device=device, progress=not args.no_progress, keep_models=args.keep_models,
                       last_data=not args.no_last_data)
    if dist.is_main():
        test = result.series("test_perplexity")
        print(f"{result.run_dir}: generation 0 and {result.n_generations} more; test perplexity "
              + " ".join(f"{x:.2f}" for x in test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
