"""The LM engine at OPT-125m's size on a GPU: training and 5-beam generation speed, memory, Fig. 1's cost.

``python -m benchmarks.run lm_gpu`` (or ``make bench-gpu``).  With CUDA it
builds a randomly initialised model of facebook/opt-125m's shape
(``OPTConfig()``: hidden 768, 12 layers, vocabulary 50272; no download) and
random token ids; without CUDA, the quick profile's tiny OPT shape (hidden
64, 2 layers, the synthetic vocabulary of 516), so that the benchmark runs
on a CPU in about a minute and is tested (``tests/test_bench_lm_gpu.py``).

Measured, side by side in one run:

* training tokens/s: a plain torch loop doing Trainer's step (AdamW lr 2e-5,
  weight decay 0.01, no clipping, gradients set to None after each step;
  fp16/bf16 through ``torch.autocast``, with a ``GradScaler`` for fp16),
  batch 128 of 64 tokens, in fp32 (the official code's) and, on a GPU, in
  bf16 (fp16 where bf16 is not supported); Trainer's per-epoch evaluation
  and bookkeeping are not in it;
* 5-beam generation of 64 new tokens for 64-token prompts, batch 128: Hugging
  Face ``generate`` as the official code calls it (fp32) and the fixed-shape
  search of :mod:`mcutils.lm.beam`, on the same prompts, timed in turns
  (the best of 3 on a CPU, of 2 on a GPU), and whether their outputs are
  identical; on a GPU both again with the model in bf16 (SDPA
  attention, the default);
* peak memory (``torch.cuda.max_memory_allocated``, GPU only) beside the
  prediction of :mod:`mcutils.lm.memory`;
* time per generation of the chain (train 5 epochs + generate a
  continuation of every training block) and the projected time of Fig. 1:
  two settings (5 and 10 epochs), 5 seeds, 10 models each.

The corpus: wikitext-2-raw-v1's training split has 2,088,628 words; OPT's
GPT-2 byte-level BPE makes about 1.15 tokens of a word of it, so we assume
2.4M tokens, 37,500 blocks of 64 (the exact count comes with the dataset).
On a CPU the quick profile's synthetic corpus (32,768 tokens, 512 blocks)
stands in.  ``MCUTILS_BENCH_THREADS=1`` pins torch to one thread.
"""
from __future__ import annotations

import os
import time

BLOCK = 64
BATCH = 128
BEAMS = 5
WIKITEXT2_TRAIN_WORDS = 2_088_628
WIKITEXT2_TRAIN_TOKENS = 2_400_000  # assumption: about 1.15 BPE tokens per word
FIG1 = {"settings": {"setting 1": 5, "setting 2": 10}, "seeds": 5, "models": 10}  # epochs per setting


def _model_config(cuda: bool):
    from transformers import OPTConfig

    from mcutils.lm import settings
    from mcutils.lm.language import SyntheticLanguage
    from mcutils.lm.model import tiny_config

    if cuda:
        return OPTConfig(), WIKITEXT2_TRAIN_TOKENS // BLOCK, "facebook/opt-125m shape, random init"
    quick = settings.quick()
    vocab = len(SyntheticLanguage(quick.language).tokenizer())
    return tiny_config(vocab, quick), quick.corpus.train_tokens // BLOCK, "quick profile's tiny OPT shape, random init"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str):
    import torch

    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else None


def measure_training(model, blocks, device: str, precision: str, steps: int) -> dict:
    """Tokens per second of ``steps`` optimisation steps of batch 128 (after two untimed ones), and the peak."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model.train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    scaler = torch.amp.GradScaler(device) if precision == "fp16" else None
    data = torch.as_tensor(blocks, device=device)

    def step(i):
        batch = data[(i * BATCH) % len(data):][:BATCH]
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=batch, labels=batch).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(2):  # warm-up: kernels chosen, AdamW's moments created
        step(i)
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i + 2)
    _sync(device)
    seconds = time.perf_counter() - start
    model.eval()
    return {"tokens_per_s": round(steps * BATCH * BLOCK / seconds, 1), "peak_bytes": _peak(device),
            "steps": steps}


def measure_generation(model, prompts, device: str, backends, batch_size: int, repeats: int) -> dict:
    """Per backend: new tokens per second of 5-beam search over ``prompts``, the best of ``repeats`` timings
    taken in turns (hf, static, hf, static, ...: a machine busy with other work slows both alike), its
    peak memory and its tokens."""
    from mcutils.lm import dist, generate

    runs = {backend: {"seconds": float("inf")} for backend in backends}
    with dist.single_process():
        for backend in backends:  # warm-up
            generate.beam_continuations(model, prompts[:8], new_tokens=BLOCK, num_beams=BEAMS, batch_size=8,
                                        device=device, progress=False, backend=backend)
        for _ in range(repeats):
            for backend in backends:
                _sync(device)
                _reset_peak(device)
                start = time.perf_counter()
                out = generate.beam_continuations(model, prompts, new_tokens=BLOCK, num_beams=BEAMS,
                                                  batch_size=batch_size, device=device, progress=False,
                                                  backend=backend)
                _sync(device)
                seconds = time.perf_counter() - start
                run = runs[backend]
                if seconds < run["seconds"]:
                    run.update(seconds=seconds, new_tokens_per_s=out.size / seconds)
                run.update(peak_bytes=_peak(device), tokens=out)
    for run in runs.values():
        run["seconds"], run["new_tokens_per_s"] = round(run["seconds"], 2), round(run["new_tokens_per_s"], 1)
    return runs


def project(train_tokens_per_s: float, generation_tokens_per_s: float, n_blocks: int) -> dict:
    """Seconds of one generation of each setting (train its epochs + continue every block) and of Fig. 1."""
    epoch_s = n_blocks * BLOCK / train_tokens_per_s
    generate_s = n_blocks * BLOCK / generation_tokens_per_s
    per_generation = {name: epochs * epoch_s + generate_s for name, epochs in FIG1["settings"].items()}
    total = FIG1["seeds"] * FIG1["models"] * sum(per_generation.values())
    return {"epoch_s": round(epoch_s, 1), "generate_all_blocks_s": round(generate_s, 1),
            "generation_s": {k: round(v, 1) for k, v in per_generation.items()},
            "fig1_hours": round(total / 3600, 2)}


def main(*, device: str | None = None, train_steps: int | None = None, generation_blocks: int | None = None,
         generation_batch: int = BATCH, repeats: int | None = None) -> dict:
    """Run the benchmark (``device``: "cuda" or "cpu", default the GPU if there is one; the other keywords
    shrink the run, for the test) and return its results."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import numpy as np
    import torch
    from transformers import OPTForCausalLM

    from mcutils.lm import memory

    if os.environ.get("MCUTILS_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["MCUTILS_BENCH_THREADS"]))
    from mcutils import validate

    device = validate.resolve_device(device or "auto")
    validate.choice("device", device, ["cpu", "cuda"])
    cuda = device == "cuda"
    config, n_blocks, what = _model_config(cuda)
    train_steps = train_steps or (30 if cuda else 2)
    generation_blocks = generation_blocks or (2 * BATCH if cuda else BATCH)
    repeats = repeats or (2 if cuda else 3)
    half = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else None
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "model": what,
                    "n_parameters": memory.n_parameters(config), "torch_threads": torch.get_num_threads(),
                    "corpus_blocks": n_blocks, "batch_size": BATCH, "generation_batch_size": generation_batch,
                    "beams": BEAMS, "prompt_tokens": BLOCK, "new_tokens": BLOCK, "timing_repeats": repeats}
    rng = np.random.default_rng(0)
    blocks = rng.integers(3, config.vocab_size, size=((train_steps + 2) * BATCH, BLOCK), dtype=np.int64)
    prompts = rng.integers(3, config.vocab_size, size=(generation_blocks, BLOCK), dtype=np.int64)
    torch.manual_seed(0)
    base = OPTForCausalLM(config).eval()
    state = {k: v.clone() for k, v in base.state_dict().items()}

    # -- training ---------------------------------------------------------------------------------
    for precision in ["fp32"] + ([half] if half else []):
        base.load_state_dict(state)
        run = measure_training(base, blocks, device, precision, train_steps)
        result[f"train_{precision}_tokens_per_s"] = run["tokens_per_s"]
        result[f"train_{precision}_peak_bytes"] = run["peak_bytes"]
        result[f"train_{precision}_peak_predicted_bytes"] = memory.training_peak_bytes(config, BATCH, BLOCK, precision)
        print(f"training {precision}: {run['tokens_per_s']:.0f} tokens/s", flush=True)
    base.load_state_dict(state)
    base.eval()

    # -- generation -------------------------------------------------------------------------------
    outputs = {}
    for dtype_name in ["fp32"] + (["bf16"] if cuda and half == "bf16" else []):
        model = base.to(device=device, dtype=torch.float32 if dtype_name == "fp32" else torch.bfloat16)
        runs = measure_generation(model, prompts, device, ("hf", "static"), generation_batch, repeats)
        for backend, run in runs.items():
            key = f"generate_{backend}_{dtype_name}"
            outputs[key] = run.pop("tokens")
            result[f"{key}_new_tokens_per_s"] = run["new_tokens_per_s"]
            result[f"{key}_s"] = run["seconds"]
            result[f"{key}_peak_bytes"] = run["peak_bytes"]
            # The fixed-shape search double-buffers its cache on the CPU only (mcutils.lm.beam.beam_search).
            result[f"{key}_peak_predicted_bytes"] = memory.generation_peak_bytes(
                config, generation_batch, BEAMS, BLOCK, BLOCK, dtype_name, backend,
                double_buffered=backend == "static" and not cuda)
            print(f"generate {backend} {dtype_name}: {run['new_tokens_per_s']:.0f} new tokens/s", flush=True)
        result[f"identical_{dtype_name}"] = bool(np.array_equal(outputs[f"generate_hf_{dtype_name}"],
                                                                outputs[f"generate_static_{dtype_name}"]))
        result[f"static_over_hf_speedup_{dtype_name}"] = round(
            result[f"generate_static_{dtype_name}_new_tokens_per_s"]
            / result[f"generate_hf_{dtype_name}_new_tokens_per_s"], 2)
    result["identical"] = result["identical_fp32"]

    # -- projections ------------------------------------------------------------------------------
    result["official_fp32"] = project(result["train_fp32_tokens_per_s"],
                                      result["generate_hf_fp32_new_tokens_per_s"], n_blocks)
    # Faster: training in the faster precision (half precision changes the numbers a little), generation by
    # the fixed-shape search in fp32 (the official search's tokens when `identical`).
    fast_precision = max(["fp32"] + ([half] if half else []), key=lambda p: result[f"train_{p}_tokens_per_s"])
    result["fast_training_precision"] = fast_precision
    result["fast"] = project(result[f"train_{fast_precision}_tokens_per_s"],
                             result["generate_static_fp32_new_tokens_per_s"], n_blocks)
    result["summary"] = (
        f"{what} on {result['device']}: train {result['train_fp32_tokens_per_s']:.0f} tokens/s fp32; generate "
        f"{result['generate_hf_fp32_new_tokens_per_s']:.0f} (HF) vs "
        f"{result['generate_static_fp32_new_tokens_per_s']:.0f} (fixed-shape) new tokens/s fp32, x"
        f"{result['static_over_hf_speedup_fp32']}, identical={result['identical']}; Fig. 1 projected "
        f"{result['official_fp32']['fig1_hours']} h as the official code, {result['fast']['fig1_hours']} h "
        f"with {fast_precision} training and the fixed-shape search")
    print(result["summary"], flush=True)
    return result


if __name__ == "__main__":
    main()
