"""Is the quick profile's posterior collapse due to the 8×8 digits or to under-training?

The 05_vae chapter's quick profile (scikit-learn's 1797 digits of 8×8
pixels, 20 epochs a generation) sees the posterior KL of its VAEs fall to
zero at generation 2: from then on every sample is one average image.  Two
explanations fit that observation:

- *under-training*: 20 epochs on 1797 images are 300 optimiser steps; a VAE
  stopped early has a blurrier decoder, hence less varied samples, hence a
  next generation with less to encode;
- *the data*: an 8×8 digit carries little information, so once the samples
  have lost some of their spread, a code is not worth its KL price, however
  long one trains.

The measurement that separates them runs the same chain (same seed, same
data, same everything) with three times the epochs.  If under-training is
the cause, the better-trained chain keeps a non-zero KL for longer; if the
data are the cause, it collapses at the same generation.

``python -m benchmarks.vae_collapse`` (about 3 minutes of CPU at one thread
when nothing else runs) writes ``benchmarks/vae_collapse.md``: a table and,
in a fenced ``json`` block, every measured number, which a cell of the 05_vae
chapter reads and prints; the chapter states no number that this file does not hold.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "vae_collapse.md"
EPOCHS = (20, 60)  # the quick profile's, and three times as many
N_GENERATIONS = 5  # as the quick profile
SEED = 0


def measure(epochs: int) -> dict:
    import torch

    from mcutils import vae

    torch.set_num_threads(1)
    images, labels = vae.load_images("digits")
    start = time.perf_counter()
    chain = vae.vae_chain(images, labels, N_GENERATIONS, epochs=epochs, seed=SEED, device="cpu",
                          runs_root=None, log=lambda line: print(f"  [{epochs} epochs] {line}", flush=True))
    return {
        "epochs": epochs,
        "seconds": round(time.perf_counter() - start, 1),
        "kl_per_image": [round(m["kl_per_image"], 3) for m in chain.metrics],
        "final_loss": [round(m["final_loss"], 2) for m in chain.metrics],
        "latent_std": [round(m["latent_std"], 4) for m in chain.metrics],
        "sample_pixel_std": [round(m["sample_pixel_std"], 4) for m in chain.metrics],
        "class_entropy_bits": [round(m["class_entropy_bits"], 3) for m in chain.metrics],
    }


def first_collapsed(kl: list, threshold: float = 0.05) -> int | None:
    """The first generation whose posterior KL is below ``threshold`` nats per image (None if none)."""
    return next((g for g, value in enumerate(kl) if value < threshold), None)


def main() -> dict:
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs = [measure(epochs) for epochs in EPOCHS]
    for run in runs:
        run["first_collapsed_generation"] = first_collapsed(run["kl_per_image"])
    result = {"dataset": "digits (scikit-learn, 1797 images of 8x8)", "n_generations": N_GENERATIONS, "seed": SEED,
              "collapse_threshold_nats": 0.05, "torch_threads": 1, "load_average_start": load_start,
              "load_average_end": [round(x, 2) for x in os.getloadavg()], "runs": runs}
    lines = ["# VAE posterior collapse: 8x8 digits or under-training?", "",
             "Produced by `python -m benchmarks.vae_collapse` (see its docstring). Posterior KL of each",
             "generation on its own training images, in nats per image; the same chain with 3x the epochs.", "",
             "| epochs | " + " | ".join(f"gen {g}" for g in range(N_GENERATIONS + 1)) + " | first KL < 0.05 | seconds |",
             "|---" * (N_GENERATIONS + 4) + "|"]
    for run in runs:
        lines.append(f"| {run['epochs']} | " + " | ".join(f"{k:.2f}" for k in run["kl_per_image"])
                     + f" | {run['first_collapsed_generation']} | {run['seconds']} |")
    lines += ["", "Every measured number:", "", "```json", json.dumps(result, indent=1), "```", ""]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines[:8 + len(runs)]))
    return result


if __name__ == "__main__":
    main()
