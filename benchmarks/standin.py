"""How the quick profile's stand-in for OPT-125m was chosen: generation-0 criteria, then one step of the chain.

``python -m benchmarks.standin [NAME ...] [--jobs 2]`` runs each try (a set of
overrides of the quick profile's setting 1) for generation 0 and generation 1
and writes ``benchmarks/standin/<name>.json``; ``--report`` writes
``benchmarks/standin/TRIES.md`` from those files.

A stand-in is *faithful* when its generation 0 alone has the properties OPT-125m
fine-tuned on wikitext-2 has (the criteria below are fixed before any chain is
looked at; :data:`CRITERIA` holds them, and the chapter checks them again).
Generation 1 is run for every try only to measure how fast each one degrades
(the chapter's "how fast collapse happens" figure); it plays no part in the choice.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mcutils.lm.fidelity import CRITERIA, generation0_measures, verdicts

HERE = Path(__file__).resolve().parent / "standin"

# Each try: overrides of mcutils.lm.settings.quick() (nested specs as dicts), written as tried.
BIG = dict(hidden_size=128, n_layers=4, n_heads=4, ffn_dim=512, pretrain_tokens=1_638_400)
TRIES = {
    "t00-old-default": dict(corpus=dict(train_tokens=16384)),
    "t01-issue-try": dict(corpus=dict(train_tokens=32768), tiny=BIG),
    "t02-shift0.9": dict(corpus=dict(train_tokens=32768), tiny=BIG, language=dict(domain_shift=0.9)),
    "t04-shift0.9-lr3e-4": dict(corpus=dict(train_tokens=32768), tiny=BIG, language=dict(domain_shift=0.9),
                                learning_rate=3e-4),
    "t05-h96-shift0.8": dict(corpus=dict(train_tokens=32768), language=dict(domain_shift=0.8),
                             tiny=dict(hidden_size=96, n_layers=3, n_heads=4, ffn_dim=384, pretrain_tokens=1_228_800)),
    "t06-shift0.8": dict(corpus=dict(train_tokens=32768), tiny=BIG, language=dict(domain_shift=0.8)),
    "t07-shift0.8-lr3e-3": dict(corpus=dict(train_tokens=32768), tiny=BIG, language=dict(domain_shift=0.8),
                                learning_rate=3e-3),
    "t08-shift0.8-data64k": dict(corpus=dict(train_tokens=65536), tiny=BIG, language=dict(domain_shift=0.8)),
    "t09-w256-shift0.8": dict(corpus=dict(train_tokens=32768), language=dict(n_words=256, topic_words=16,
                                                                             domain_shift=0.8)),
    "t10-h96-w256-shift0.8": dict(corpus=dict(train_tokens=32768), language=dict(n_words=256, topic_words=16,
                                                                                 domain_shift=0.8),
                                  tiny=dict(hidden_size=96, n_layers=3, n_heads=4, ffn_dim=384,
                                            pretrain_tokens=1_228_800)),
    "t11-w256-shift0.9": dict(corpus=dict(train_tokens=32768), language=dict(n_words=256, topic_words=16,
                                                                             domain_shift=0.9)),
    "t12-w256-shift0.8-data64k": dict(corpus=dict(train_tokens=65536), language=dict(n_words=256, topic_words=16,
                                                                                     domain_shift=0.8)),
    "t13-w256-shift0.7": dict(corpus=dict(train_tokens=32768), language=dict(n_words=256, topic_words=16,
                                                                             domain_shift=0.7)),
    "t14-w128-shift0.8": dict(corpus=dict(train_tokens=32768), language=dict(n_words=128, topic_words=8,
                                                                             domain_shift=0.8)),
    "t15-w256-shift0.8-lr3e-3": dict(corpus=dict(train_tokens=32768), language=dict(n_words=256, topic_words=16,
                                                                                    domain_shift=0.8),
                                     learning_rate=3e-3),
    "t16-h96-w256-shift0.8-data64k": dict(corpus=dict(train_tokens=65536),
                                          language=dict(n_words=256, topic_words=16, domain_shift=0.8),
                                          tiny=dict(hidden_size=96, n_layers=3, n_heads=4, ffn_dim=384,
                                                    pretrain_tokens=1_228_800)),
    "t17-w256-shift0.8-data64k-pre1.6M": dict(corpus=dict(train_tokens=65536),
                                              language=dict(n_words=256, topic_words=16, domain_shift=0.8),
                                              tiny=dict(pretrain_tokens=1_638_400)),
}


# After the choice: the chosen stand-in with one thing changed at a time (model size, learning rate), for
# the chapter's figure of how fast the chain degrades; these play no part in the choice.
CHOSEN = "t10-h96-w256-shift0.8"
_LANGUAGE = dict(n_words=256, topic_words=16, domain_shift=0.8)
_SIZES = {"small": dict(hidden_size=64, n_layers=2, n_heads=4, ffn_dim=256),
          "large": dict(hidden_size=128, n_layers=4, n_heads=4, ffn_dim=512)}
SWEEP: dict = {
    **{f"s1-size-{size}": dict(corpus=dict(train_tokens=32768), language=_LANGUAGE,
                               tiny=dict(**shape, pretrain_tokens=1_228_800)) for size, shape in _SIZES.items()},
    **{f"s2-lr{lr:g}": dict(corpus=dict(train_tokens=32768), language=_LANGUAGE, learning_rate=lr,
                           tiny=dict(hidden_size=96, n_layers=3, n_heads=4, ffn_dim=384, pretrain_tokens=1_228_800))
       for lr in (3e-4, 3e-3)},
}
ALL = {**TRIES, **SWEEP}


def settings_of(overrides: dict):
    from mcutils.lm import settings
    return settings.quick(**settings.overrides_from_dict(settings.ChainSettings, overrides))


def run_try(name: str, threads: int = 1) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    from mcutils.lm import chain

    torch.set_num_threads(threads)
    overrides = ALL[name]
    st = settings_of({"beam_backend": "static", **overrides})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs_dir:
        result = chain.run_chain(st, 1, runs_dir=runs_dir, progress=False, log=lambda m: print(f"[{name}] {m}", flush=True))
        m0, m1 = result.metrics
        timing = [json.loads((Path(result.run_dir) / f"gen_{g:02d}" / "timing.json").read_text())
                  for g in (0, 1)] if hasattr(result, "run_dir") else []
    measures = generation0_measures(m0)
    record = {
        "name": name, "purpose": "choice" if name in TRIES else "sweep", "chosen": name == CHOSEN,
        "overrides": overrides,
        "generation0": measures, "criteria_met": verdicts(measures),
        "generation1": {"test_perplexity": m1["test_perplexity"],
                        "degradation": m1["test_perplexity"] / m0["test_perplexity"],
                        "topic_kept": m1["samples"]["topic_kept"], "distinct": m1["samples"]["distinct_share"]},
        "wall_s": round(time.perf_counter() - start, 1), "timing": timing, "torch_threads": threads,
        "pretraining_s": None,
    }
    HERE.mkdir(exist_ok=True)
    (HERE / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"[{name}] done in {record['wall_s']} s: {json.dumps(record['generation0'])} "
          f"met={record['criteria_met']} gen1 x{record['generation1']['degradation']:.2f}", flush=True)
    return record


def every_chain(name: str, seeds=(0, 1, 2), jobs: int = 2) -> dict:
    """Generation 0 of every chain the OPT-125m chapter runs (both settings, its three seeds) for one try.

    A stand-in must meet the criteria on every one of them (the chapter checks them all), not only on
    the first seed's setting 1; writes ``<name>.every-chain.json``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    from mcutils.lm import chain

    torch.set_num_threads(1)
    base = {"beam_backend": "static", **ALL[name]}
    settings_list, labels = [], []
    for setting, extra in (("setting 1", {}), ("setting 2", {"epochs": 10, "real_fraction": 0.1})):
        for seed in seeds:
            settings_list.append(settings_of({**base, **extra, "seed": seed}))
            labels.append(f"{setting}, seed {seed}")
    with tempfile.TemporaryDirectory() as runs_dir:
        results = chain.run_chains(settings_list, 0, jobs=jobs, runs_dir=runs_dir, log=lambda m: None)
        measures = {label: generation0_measures(r.metrics[0]) for label, r in zip(labels, results)}
    record = {"name": name, "generation0": measures,
              "criteria_met": {label: verdicts(m) for label, m in measures.items()}}
    record["all_met"] = all(all(v.values()) for v in record["criteria_met"].values())
    (HERE / f"{name}.every-chain.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"[{name}] every chain: all met = {record['all_met']}; "
          + "; ".join(f"{k}: {', '.join(c for c, ok in v.items() if not ok) or 'ok'}"
                      for k, v in record["criteria_met"].items()), flush=True)
    return record


def cost(name: str, threads: int = 1) -> dict:
    """Seconds one generation of the try takes on this machine, alone: beam search of every training
    block (timed on 256 of them) and five epochs of fine-tuning (timed on one); writes ``<name>.cost.json``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mcutils.lm import data, generate
    from mcutils.lm import model as lm_model
    from mcutils.lm.train import fine_tune

    torch.set_num_threads(threads)
    st = settings_of({"beam_backend": "static", **ALL[name]})
    model, tokenizer = lm_model.load_base_model(st, progress=False)
    blocks = data.load_blocks(st, tokenizer)
    n = len(blocks["train"])
    start = time.perf_counter()
    generate.beam_continuations(model, blocks["train"][:256], new_tokens=st.block_size, num_beams=st.num_beams,
                                progress=False, backend="static")
    beam_s = (time.perf_counter() - start) * n / 256
    start = time.perf_counter()
    fine_tune(lm_model.fresh_copy(model), blocks["train"], blocks["validation"], epochs=1,
              learning_rate=st.learning_rate, min_learning_rate=st.min_learning_rate, batch_size=st.batch_size,
              seed=0, progress=False)
    train_s = (time.perf_counter() - start) * st.epochs
    record = {"name": name, "n_blocks": n, "beam_s": round(beam_s, 1), "train_s": round(train_s, 1),
              "generation_s": round(beam_s + train_s, 1), "torch_threads": threads}
    (HERE / f"{name}.cost.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"[{name}] one generation ~ {record['generation_s']} s ({n} blocks: beam {record['beam_s']} s, "
          f"5 epochs {record['train_s']} s)", flush=True)
    return record


def load_tries(folder: Path = HERE) -> list[dict]:
    """The recorded tries, in the order they were tried (their names start with a number)."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("[ts]*.json"))
            if not p.name.endswith((".every-chain.json", ".cost.json"))]


def report(records: list[dict]) -> str:
    """``TRIES.md``: every try's overrides, generation-0 measures and verdicts, then its generation 1."""
    lines = ["# How the quick profile's stand-in was chosen", "",
             "Written by `python -m benchmarks.standin --report` from the files beside it; each try is the",
             "quick profile's setting 1 with the overrides shown, generation 0 and 1, one torch thread",
             "each; two to four tries ran side by side on two cores, so the wall times are inflated alike.",
             f"Chosen: `{CHOSEN}` (`mcutils.lm.settings.quick`): of the tries that met every criterion, the",
             "cheapest whose generation 0 met them on every chain the chapter runs (`--every-chain`: both",
             "settings, three seeds) with a margin, since the chapter checks them again on other machines",
             "(see the last section).",
             "The `s*` tries were run after the choice (one thing changed at a time) for the OPT-125m",
             "chapter's figure of how fast the chain degrades; their generation 1 played no part in the choice.",
             "The criteria (generation 0 only, fixed before any chain was looked at):", ""]
    for name, (what, threshold, kind) in CRITERIA.items():
        lines.append(f"- `{name}` {'≥' if kind == 'min' else '≤'} {threshold:g}: {what}")
    lines += ["", "| try | parameters | zero-shot / fine-tuned | fine-tuned / source | topic kept | distinct | "
              "word types used | all met | generation 1 / generation 0 | wall time |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        g0, ok = r["generation0"], r["criteria_met"]
        mark = {True: "yes", False: "**no**"}
        lines.append(
            f"| `{r['name']}`{' (chosen)' if r.get('chosen') else ''} | {g0['n_parameters']:,} | {g0['fine_tuning_gain']:.2f} ({mark[ok['fine_tuning_gain']]}) | "
            f"{g0['gap_to_source']:.2f} ({mark[ok['gap_to_source']]}) | {g0['topic_kept']:.0%} ({mark[ok['topic_kept']]}) | "
            f"{g0['distinct']:.0%} ({mark[ok['distinct']]}) | {g0['word_types_used']:.0%} | {mark[all(ok.values())]} | "
            f"{r['generation1']['degradation']:.2f} | {r['wall_s']:.0f} s |")
    lines += ["", "## The finalists: every chain of the chapter, and the cost of a generation", "",
              "`python -m benchmarks.standin --every-chain --cost NAME ...`: generation 0 of both settings for",
              "seeds 0-2 (the worst value over the six chains, and its bound), and one generation's time",
              "measured alone, one after the other (beam search of every training block, five epochs).", "",
              "| try | zero-shot / fine-tuned | fine-tuned / source | topic kept | distinct | one generation |",
              "|---|---|---|---|---|---|"]
    for path in sorted(HERE.glob("*.every-chain.json")):
        r = json.loads(path.read_text())
        worst = {}
        for name, (_, threshold, kind) in CRITERIA.items():
            values = [m[name] for m in r["generation0"].values()]
            worst[name] = (min(values) if kind == "min" else max(values), threshold)
        cost_path = HERE / f"{r['name']}.cost.json"
        seconds = f"{json.loads(cost_path.read_text())['generation_s']} s" if cost_path.is_file() else "not measured"
        lines.append(f"| `{r['name']}` | " + " | ".join(f"{v:.3f} (bound {t:g})" for v, t in worst.values())
                     + f" | {seconds} |")
    lines += ["", "`t17` is cheaper per generation, but one of its chains sits exactly on a bound (distinct 0.900 for",
              "setting 1, seed 1): rounding on another machine (the test suite re-executes the chapter on other",
              "kernels and thread counts) can tip it below, and then the chapter's check of the stand-in fails.",
              "`t10` clears every bound on every chain by a margin, so it was chosen.  This used generation 0 only."]
    lines += ["", "Overrides of each try:", ""]
    lines += [f"- `{r['name']}`: `{json.dumps(r['overrides'])}`" for r in records]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"tries to run (default: those without a result; known: {list(ALL)})")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only write TRIES.md from the recorded tries")
    parser.add_argument("--every-chain", action="store_true",
                        help="for the named tries: generation 0 of every chain the chapter runs (3 seeds x 2 settings)")
    parser.add_argument("--cost", action="store_true", help="for the named tries: one generation's time, alone")
    args = parser.parse_args(argv)
    if args.every_chain or args.cost:
        for name in args.names:
            if args.cost:
                cost(name)
            if args.every_chain:
                every_chain(name, jobs=args.jobs)
        return 0
    if not args.report:
        names = args.names or [n for n in ALL if not (HERE / f"{n}.json").is_file()]
        unknown = sorted(set(names) - set(ALL))
        if unknown:
            parser.error(f"unknown tries {unknown}; known: {list(ALL)}")
        with ProcessPoolExecutor(args.jobs) as pool:
            list(pool.map(run_try, names))
    (HERE / "TRIES.md").write_text(report(load_tries()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
