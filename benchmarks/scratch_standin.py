"""How the quick profile's from-scratch stand-in was chosen: generation 0 only, against fixed criteria.

``python -m benchmarks.scratch_standin [NAME ...]`` trains generation 0 of each try
(overrides of :func:`mcutils.lm.scratch_settings.quick`, nested ``language`` as a dict)
at one torch thread, draws the temperature-1.0 set generation 1 would train on (the
same seeds), and writes ``benchmarks/scratch_standin/<name>.json``; ``--report``
writes ``benchmarks/scratch_standin.md`` from those files.  The criteria are
:data:`mcutils.lm.scratch_fidelity.CRITERIA`; no generation after 0 is run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "scratch_standin"

# The base every try overrides: the first draft of quick() (the settings the search started from).
BASE = dict(family="gpt2", hidden_size=96, n_layers=2, n_heads=4, intermediate_size=384, block_size=64,
            train_tokens=32_256, eval_tokens=8_064, batch_size=16, learning_rate=3e-3, min_learning_rate=1e-4,
            generation_batch_size=256, language=dict(n_words=128, n_topics=8, topic_words=16))
# Written as tried, in order.
TRIES = {
    "s00-w128-h96-32k": dict(),
    "s01-w128-h96-32k-b8": dict(batch_size=8),  # (s00-s09 were run as overrides of the then quick(), = BASE)
    "s02-w128-h96-64k-b8": dict(train_tokens=64_512, batch_size=8),
    "s03-w64-h96-32k-b8": dict(batch_size=8, language=dict(n_words=64, n_topics=4, topic_words=8)),
    "s04-w64-h96-64k-b8": dict(train_tokens=64_512, batch_size=8, language=dict(n_words=64, n_topics=4, topic_words=8)),
    "s05-w128-h96-128k-b16": dict(train_tokens=129_024),
    "s06-w64-h64-64k-b8-lr1e-2": dict(train_tokens=64_512, batch_size=8, learning_rate=1e-2, hidden_size=64,
                                      intermediate_size=256, language=dict(n_words=64, n_topics=4, topic_words=8)),
    "s07-w64-h96-96k-b8": dict(train_tokens=96_768, batch_size=8, language=dict(n_words=64, n_topics=4, topic_words=8)),
    "s08-w64-h96-64k-b4-lr2e-3": dict(train_tokens=64_512, batch_size=4, learning_rate=2e-3,
                                      language=dict(n_words=64, n_topics=4, topic_words=8)),
    "s09-w64-h128-64k-b8": dict(train_tokens=64_512, batch_size=8, hidden_size=128, intermediate_size=512,
                                language=dict(n_words=64, n_topics=4, topic_words=8)),
    # s07 meets the criteria but the chapter's chains then take about 12 minutes on two cores: smaller.
    "s10-w32-h96-32k-b8": dict(train_tokens=32_256, batch_size=8, language=dict(n_words=32, n_topics=2, topic_words=8)),
    "s11-w32-h64-32k-b8": dict(train_tokens=32_256, batch_size=8, hidden_size=64, intermediate_size=256,
                               language=dict(n_words=32, n_topics=2, topic_words=8)),
    "s12-w48-h96-48k-b8": dict(train_tokens=48_384, batch_size=8, language=dict(n_words=48, n_topics=4, topic_words=8)),
    "s13-w32-h96-32k-b4-lr2e-3": dict(train_tokens=32_256, batch_size=4, learning_rate=2e-3,
                                      language=dict(n_words=32, n_topics=2, topic_words=8)),
}


def run_try(name: str, overrides: dict) -> dict:
    import torch

    from mcutils.lm import scratch
    from mcutils.lm.language import LanguageSpec
    from mcutils.lm.scratch_fidelity import generation0_measures, verdicts
    from mcutils.lm.scratch_settings import ScratchSettings

    torch.set_num_threads(1)
    full = {**BASE, **overrides}
    full["language"] = LanguageSpec(**full["language"])
    settings = ScratchSettings(**full)
    with tempfile.TemporaryDirectory() as runs_dir:
        tick = time.perf_counter()
        result = scratch.run_scratch_chain(settings, 0, runs_dir=runs_dir, progress=False, device="cpu",
                                           log=lambda message: None)
        train_s = time.perf_counter() - tick
        m0 = result.metrics[0]
        model = scratch._load_model(result.run_dir / "gen_00" / scratch.MODEL)
        tokenizer = scratch.load_tokenizer(settings)
        vocabulary = scratch.vocabulary_of(tokenizer)
        n_real = m0["real_data"]["n_sequences"]
        tick = time.perf_counter()
        samples = scratch.ancestral_sample(model, settings.synthetic_blocks(1, n_real), settings.block_size,
                                           bos_token_id=vocabulary.bos_token_id, temperature=1.0,
                                           seed_key=(settings.seed, scratch.STREAM_SAMPLING, 1),
                                           batch_size=settings.generation_batch_size)
        sample_s = time.perf_counter() - tick
        from mcutils.lm.language import SyntheticLanguage
        language = SyntheticLanguage(settings.language)
        samples_true = scratch.true_cross_entropy(language, samples)
    measures = generation0_measures(m0, samples_true)
    record = {"name": name, "overrides": overrides, "settings": settings.to_dict(),
              "measures": measures, "verdicts": verdicts(measures),
              "source_entropy_rate": m0["source_entropy_rate"],
              "seconds": {"generation0": train_s, "sample": sample_s}, "torch_threads": 1}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(record, indent=1))
    return record


def verdict(v: dict) -> str:
    failed = [k for k, ok in v.items() if ok is False]
    unknown = [k for k, ok in v.items() if ok is None]
    text = "fails " + ", ".join(failed) if failed else ("all met" if not unknown else "the others met")
    return text + (f" ({', '.join(unknown)}: not measured)" if unknown else "")


def report() -> str:
    from mcutils.lm.scratch_fidelity import CRITERIA, bound_text, meets

    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    lines = ["# The quick profile's from-scratch stand-in: generation-0 tries", "",
             "Written by `python -m benchmarks.scratch_standin --report` from `benchmarks/scratch_standin/*.json`.",
             "Each try trains generation 0 of `ScratchSettings(**{**BASE, **overrides})` (GPT-2 from scratch,",
             "one epoch, one torch thread) and draws the T=1.0 set that generation 1 would train on. Criteria",
             "(`mcutils.lm.scratch_fidelity`):", "", f"BASE (the first draft of `quick()`): `{json.dumps(BASE)}`", ""]
    lines += [f"* `{name}` {bound_text(name)}: {what}" for name, (what, _) in CRITERIA.items()]
    lines += ["", "| try | overrides | params | test CE | source CE | excess | samples' true CE | real's true CE |"
              " ratio | non-word tokens | (sequences) | gen-0 s | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["measures"]
        # judged again from the measures against today's CRITERIA (s00-s09 predate the token count: "n/a")
        v = {name: (meets(name, m[name]) if name in m else None) for name in CRITERIA}
        lines.append(f"| {r['name']} | `{json.dumps(TRIES.get(r['name'], r['overrides']))}` | {m['n_parameters']:,} | "
                     f"{m['test_cross_entropy']:.3f} | {m['source_test_cross_entropy']:.3f} | "
                     f"{m['excess_over_source']:.3f} | {m['samples_true_cross_entropy']:.3f} | "
                     f"{m['real_true_cross_entropy']:.3f} | {m['samples_true_ratio']:.3f} | "
                     f"{m.get('samples_non_word_token_share', float('nan')):.4f} | {m['samples_non_word_share']:.3f} | "
                     f"{r['seconds']['generation0']:.1f} | "
                     f"{verdict(v)} |")
    lines += ["", "Tries s00-s09 were measured before the non-word criterion counted tokens (it counted sequences,",
              "at most 1%, and every try failed it); their token share is not measured. s07 met the other two",
              "criteria, but the chapter's chains then took about 12 minutes on two shared cores, so the search went",
              "on with smaller languages at 32k tokens. **s13 is the quick profile** (`quick()`): all three met.", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"tries to run (default: all of {list(TRIES)})")
    parser.add_argument("--report", action="store_true", help="write the markdown table only")
    args = parser.parse_args(argv)
    if not args.report:
        for name in args.names or list(TRIES):
            r = run_try(name, TRIES[name])
            print(name, json.dumps(r["measures"]), r["verdicts"], flush=True)
    (HERE / "scratch_standin.md").write_text(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
