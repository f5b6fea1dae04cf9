"""The LM engine's speed on this machine: the quick-profile chain and Hugging Face `generate`.

Measures (``python -m benchmarks.run lm``):

* the pre-training of the tiny OPT (once per clone; skipped when cached);
* the quick profile's 10-generation chain, end to end, in a fresh runs folder
  (target: under 5 minutes on 2 CPU cores) and what it shows (test
  perplexity of generation 0 and 9);
* Hugging Face ``generate`` as the official code calls it (5 beams,
  ``min_new_tokens = max_new_tokens = 64``, one call per batch of 128
  blocks, fp32) on the quick model: blocks and new tokens per second;
* Trainer fine-tuning throughput (tokens per second, one epoch);
* the fixed-shape beam search (:mod:`mcutils.lm.beam`, what the quick
  profile runs) with its cache double-buffered (its CPU default) against one
  buffer and a copy back, side by side: the best of 5 timings each, taken in
  turns, one thread, alone and with a second process doing the same (as the
  chapter's two chains run), and whether the tokens are identical.

``MCUTILS_BENCH_THREADS=1`` pins torch to one thread: on a 2-core machine
shared with other jobs, two OpenMP threads contend and run several times
slower than one.  The load average is recorded beside the times.
"""
from __future__ import annotations

import os
import tempfile
import time

N_GENERATIONS = 9  # refits after generation 0: a chain of 10 models


def main() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    from mcutils.lm import chain, data, generate, settings
    from mcutils.lm import model as lm_model
    from mcutils.lm.train import fine_tune

    if os.environ.get("MCUTILS_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["MCUTILS_BENCH_THREADS"]))
    quick = settings.quick()
    result: dict = {"torch_threads": torch.get_num_threads(), "settings": quick.run_name,
                    "load_average_before": round(os.getloadavg()[0], 2)}

    start = time.perf_counter()
    source = lm_model.tiny_source(quick)
    cached = (source / lm_model.PRETRAINING_INFO).is_file()
    model, tokenizer = lm_model.load_base_model(quick, progress=False)
    result["pretrain_s"] = 0.0 if cached else round(time.perf_counter() - start, 1)
    result["pretrain_cached"] = cached
    result["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    shipped = source == lm_model.shipped_dir(quick)
    how = ("shipped with mcutils" if shipped else "cached") if cached else f"pre-trained in {result['pretrain_s']} s"
    print(f"tiny OPT: {result['n_parameters']:,} parameters ({how})", flush=True)

    blocks = data.load_blocks(quick, tokenizer)
    batch = blocks["train"][:128]
    generate.beam_continuations(model, batch[:8], new_tokens=64, progress=False)  # warm-up
    start = time.perf_counter()
    generate.beam_continuations(model, batch, new_tokens=64, batch_size=128, progress=False)
    seconds = time.perf_counter() - start
    result["hf_generate_128_blocks_s"] = round(seconds, 2)
    result["hf_generate_new_tokens_per_s"] = round(128 * 64 / seconds, 1)
    print(f"HF generate, 5 beams, 128 blocks x 64 new tokens: {seconds:.2f} s "
          f"({128 * 64 / seconds:.0f} new tokens/s)", flush=True)

    prompts = torch.as_tensor(batch)
    result.update(measure_double_buffering(model, prompts))
    result.update({f"{key}_beside_another": value
                   for key, value in measure_double_buffering(model, prompts, beside=True).items()})
    for where, suffix in (("alone", ""), ("beside a second process", "_beside_another")):
        print(f"fixed-shape beam search, 128 blocks, {where}: {result['beam_double_buffered_s' + suffix]} s "
              f"double-buffered, {result['beam_one_buffer_s' + suffix]} s with one buffer "
              f"(x{result['double_buffering_speedup' + suffix]}, identical tokens: "
              f"{result['double_buffering_identical' + suffix]})", flush=True)

    start = time.perf_counter()
    fine_tune(lm_model.fresh_copy(model), blocks["train"], blocks["validation"], epochs=1,
              learning_rate=quick.learning_rate, min_learning_rate=quick.min_learning_rate,
              batch_size=quick.batch_size, progress=False)
    seconds = time.perf_counter() - start
    result["train_tokens_per_s"] = round(blocks["train"].size / seconds, 1)
    print(f"Trainer, one epoch of {len(blocks['train'])} blocks: {seconds:.2f} s "
          f"({blocks['train'].size / seconds:.0f} tokens/s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-lm-") as runs_dir:
        start = time.perf_counter()
        run = chain.run_chain(quick, N_GENERATIONS, runs_dir=runs_dir, progress=False)
        seconds = time.perf_counter() - start
    test = run.series("test_perplexity")
    result["quick_chain_10_models_s"] = round(seconds, 1)
    result["quick_chain_under_5_min"] = bool(seconds < 300)
    result["test_perplexity_gen0"] = round(float(test[0]), 2)
    result["test_perplexity_last"] = round(float(test[-1]), 2)
    result["samples_gen0_perplexity_median"] = [round(float(x), 2)
                                                for x in run.series("samples", "gen0_perplexity", "q50")]
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    result["summary"] = (f"quick chain, {N_GENERATIONS + 1} models: {seconds:.0f} s "
                         f"({'under' if seconds < 300 else 'OVER'} 5 min); test ppl {test[0]:.1f} -> {test[-1]:.1f}; "
                         f"HF generate {result['hf_generate_new_tokens_per_s']:.0f} new tokens/s")
    print(result["summary"], flush=True)
    return result


def measure_double_buffering(model, prompts, repeats: int = 5, new_tokens: int = 64, beside: bool = False) -> dict:
    """The fixed-shape search over ``prompts`` with a double-buffered cache and with one buffer.

    One torch thread, as each of the chapter's chains.  The best of
    ``repeats`` timings each, taken in turns (a machine busy with other work
    slows both alike).  ``beside=True``: a second process runs the same
    measurement at the same time, as the chapter runs two chains side by side
    on two cores (they share the memory bandwidth the copies use); the times
    are this process's and the speed-up the mean of both processes'.
    """
    from mcutils.lm.model import _torch_threads

    with _torch_threads(1):
        if not beside:
            return _timed_buffering(model, prompts, repeats, new_tokens)
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        ready, go, out = context.Event(), context.Event(), context.Queue()
        other = context.Process(target=_buffering_worker,
                                args=(model, prompts, repeats, new_tokens, ready, go, out), daemon=True)
        other.start()
        try:
            if not ready.wait(timeout=600):
                raise RuntimeError("the second benchmark process did not start within 10 minutes")
            go.set()  # both start timing together
            mine = _timed_buffering(model, prompts, repeats, new_tokens)
            theirs = out.get(timeout=1800)
        finally:
            other.join(timeout=60)
    mine["double_buffering_speedup"] = round((mine["double_buffering_speedup"]
                                              + theirs["double_buffering_speedup"]) / 2, 2)
    mine["double_buffering_identical"] = mine["double_buffering_identical"] and theirs["double_buffering_identical"]
    return mine


def _buffering_worker(model, prompts, repeats, new_tokens, ready, go, out) -> None:
    import torch

    torch.set_num_threads(1)
    ready.set()
    go.wait()
    out.put(_timed_buffering(model, prompts, repeats, new_tokens))


def _timed_buffering(model, prompts, repeats: int, new_tokens: int) -> dict:
    from mcutils.lm.beam import beam_search

    best, tokens = {True: float("inf"), False: float("inf")}, {}
    for _ in range(repeats):
        for double in (True, False):
            start = time.perf_counter()
            tokens[double] = beam_search(model, prompts, new_tokens=new_tokens, num_beams=5,
                                         double_buffered=double)
            best[double] = min(best[double], time.perf_counter() - start)
    return {"beam_double_buffered_s": round(best[True], 2), "beam_one_buffer_s": round(best[False], 2),
            "double_buffering_speedup": round(best[False] / best[True], 2),
            "double_buffering_identical": bool((tokens[True] == tokens[False]).all())}


if __name__ == "__main__":
    main()
