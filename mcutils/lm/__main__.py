"""``python -m mcutils.lm``: run or resume a language-model chain outside notebooks.

The defaults are the quick profile (tiny OPT, synthetic language, offline,
two CPU cores).  ``--profile paper`` is the paper's setting 1 (OPT-125m on
wikitext-2-raw-v1, from the hub).  Works under ``torchrun`` and ``accelerate
launch``: training runs data-parallel, generation and scoring are sharded.

Examples::

    python -m mcutils.lm                                  # quick profile, 10 generations
    python -m mcutils.lm --policy replace --real-fraction 0.1 --epochs 10
    python -m mcutils.lm --profile paper --device cuda    # OPT-125m on wikitext-2
    torchrun --nproc-per-node 2 -m mcutils.lm --n-generations 2
"""
from __future__ import annotations

import argparse
import sys

from .. import validate
from ..generational import POLICIES
from .settings import PROMPTS, check_hub, check_n_generations, check_precision, for_profile


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcutils.lm", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Examples::")[1])
    p.add_argument("--profile", default="quick", choices=["quick", "paper", "smoke"],
                   help="the defaults of every setting (default: quick; smoke: toy sizes for tests)")
    p.add_argument("--settings", default=None, metavar="JSON",
                   help="a JSON file of ChainSettings fields applied over the profile (flags given explicitly win)")
    p.add_argument("--runs-dir", default="", help="runs folder (default: runs/<profile> in the checkout)")
    p.add_argument("--n-generations", type=int, default=10, help="models in the chain, generation 0 included")
    p.add_argument("--seed", type=int, default=None, help="the chain's seed (default 0)")
    p.add_argument("--policy", choices=POLICIES, default=None, help="data policy (default: replace)")
    p.add_argument("--real-fraction", type=float, default=None,
                   help="share of the real blocks kept each generation under replace (paper: 0.1)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per generation (paper: 5, or 10)")
    p.add_argument("--model", default=None, help="'tiny' or a hub id / local folder (e.g. facebook/opt-125m)")
    p.add_argument("--dataset", default=None, help="'synthetic', 'wikitext' or a hub id / local folder")
    p.add_argument("--dataset-config", default=None, help="the dataset's configuration name, if any")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="beam search's repetition penalty (default 1.0 = off; paper's ablation 2.0)")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (all processes)")
    p.add_argument("--prompts", choices=PROMPTS, default=None,
                   help="continue the real blocks every generation (original) or the previous samples")
    p.add_argument("--max-train-blocks", type=int, default=None, help="use only the first N training blocks")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (numbers are reproducible for a given count; default: torch's)")
    p.add_argument("--keep-models", action="store_true", help="keep every generation's model (disk!)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


_OVERRIDES = ("seed", "policy", "real_fraction", "epochs", "model", "dataset", "dataset_config",
              "repetition_penalty", "learning_rate", "batch_size", "prompts", "max_train_blocks", "precision")


def _settings_file(path: str | None) -> dict:
    """Settings from a JSON file; nested specs (language, corpus, tiny) as objects."""
    if path is None:
        return {}
    import json

    from .language import LanguageSpec
    from .settings import SETTING_NAMES, SyntheticCorpusSpec, TinyModelSpec

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError) as exc:
        raise validate.ParameterError(f"--settings {path}: {exc}") from None
    if not isinstance(data, dict):
        raise validate.ParameterError(f"--settings {path}: expected a JSON object of settings, got "
                                      f"{type(data).__name__}")
    unknown = sorted(set(data) - set(SETTING_NAMES))
    if unknown:
        raise validate.ParameterError(f"--settings {path}: unknown settings {unknown}; known: {list(SETTING_NAMES)}")
    for key, cls in (("language", LanguageSpec), ("corpus", SyntheticCorpusSpec), ("tiny", TinyModelSpec)):
        if key in data:
            if not isinstance(data[key], dict):
                raise validate.ParameterError(f"--settings {path}: {key} must be an object, got {data[key]!r}")
            try:
                data[key] = cls(**data[key])
            except TypeError as exc:
                raise validate.ParameterError(f"--settings {path}: {key}: {exc}") from None
            except validate.ParameterError as exc:
                raise validate.ParameterError(f"--settings {path}: {key}: {exc}") from None
    return data


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
        overrides = _settings_file(args.settings)
        overrides.update({k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None})
        settings = for_profile(args.profile, **overrides)
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
        if args.threads is not None:
            import torch
            torch.set_num_threads(args.threads)
    except validate.UserError as exc:
        return _error(exc)

    from . import dist
    from .chain import run_chain

    result = run_chain(settings, args.n_generations, runs_dir=args.runs_dir, profile=args.profile,
                       device=device, progress=not args.no_progress, keep_models=args.keep_models)
    if dist.is_main():
        test = result.series("test_perplexity")
        print(f"{result.run_dir}: {result.n_generations} generations; test perplexity "
              + " ".join(f"{x:.2f}" for x in test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
