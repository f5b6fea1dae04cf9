"""Two CPU processes (torchrun, gloo): a chain end to end, sharded generation, data-parallel training.

Marked slow (about a minute): every case starts ``torchrun --nproc-per-node 2``.
This file is also the workers' script: ``torchrun ... tests/test_lm_distributed.py <task> <folder>``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
TRAINING_TOLERANCE = 1e-4  # |Δ validation loss| per epoch, 2 processes vs 1 (float summation order only)


def _torchrun(*args, env, timeout=300):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "mcutils-lm-cache"  # shared with the other LM test files
    cache.mkdir(exist_ok=True)
    environment = {**os.environ, "MCUTILS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
                   "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # build the toy pre-trained model once, in one process, so both sides share it
    subprocess.run([sys.executable, str(HERE), "pretrain", str(cache)], env=environment, check=True,
                   capture_output=True, timeout=300)
    return environment


@pytest.mark.slow
def test_a_chain_runs_end_to_end_under_two_processes(env, tmp_path):
    _torchrun("-m", "mcutils.lm", "--profile", "smoke", "--n-generations", "1", "--runs-dir", str(tmp_path),
              "--device", "cpu", "--no-progress", env=env)
    from mcutils.lm import chain, settings

    result = chain.load_chain(tmp_path / settings.smoke().run_name)
    assert result.n_generations == 1 and len(result.metrics) == 2
    timing = json.loads((result.run_dir / "gen_01" / chain.TIMING).read_text())
    assert timing["world_size"] == 2
    assert result.samples(1).shape == (64, 16)


@pytest.mark.slow
def test_sharded_generation_and_scoring_equal_one_process(env, tmp_path):
    _torchrun(str(HERE), "generate", str(tmp_path), env=env)
    subprocess.run([sys.executable, str(HERE), "generate", str(tmp_path / "single")], env=env, check=True,
                   capture_output=True, timeout=300)
    two = np.load(tmp_path / "generate.npz")
    one = np.load(tmp_path / "single" / "generate.npz")
    assert int(two["world"]) == 2 and int(one["world"]) == 1
    np.testing.assert_array_equal(two["blocks"], one["blocks"])
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-6)


@pytest.mark.slow
def test_two_process_training_matches_one_process_within_tolerance(env, tmp_path):
    _torchrun(str(HERE), "train", str(tmp_path), env=env)
    subprocess.run([sys.executable, str(HERE), "train", str(tmp_path / "single")], env=env, check=True,
                   capture_output=True, timeout=300)
    two = json.loads((tmp_path / "train.json").read_text())
    one = json.loads((tmp_path / "single" / "train.json").read_text())
    assert two["world"] == 2 and one["world"] == 1
    for a, b in zip(two["epochs"], one["epochs"]):
        assert abs(a["validation_loss"] - b["validation_loss"]) < TRAINING_TOLERANCE
    assert two["best_epoch"] == one["best_epoch"]


# -- the workers ----------------------------------------------------------------------------

def _worker(task: str, folder: str) -> None:
    import torch

    from mcutils.lm import data, dist, generate, metrics, settings
    from mcutils.lm import model as lm_model
    from mcutils.lm.train import fine_tune

    torch.set_num_threads(1)
    out = Path(folder)
    s = settings.smoke()
    dist.init("cpu")
    model, tokenizer = lm_model.load_base_model(s, progress=False)
    if task == "pretrain":
        return
    blocks = data.load_blocks(s, tokenizer)
    rank, world = dist.rank_and_world()
    if task == "generate":
        # 64 prompts in batches of 16: four batches, two per process
        new = generate.beam_continuations(model, blocks["train"], new_tokens=16, batch_size=16, progress=False)
        losses = metrics.token_losses(model, new, batch_size=16)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            np.savez(out / "generate.npz", blocks=new, losses=losses, world=world)
    elif task == "train":
        result = fine_tune(model, blocks["train"], blocks["validation"], epochs=2, learning_rate=3e-3,
                           min_learning_rate=1e-6, batch_size=16, seed=0, progress=False)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "train.json").write_text(json.dumps({**result.to_dict(), "world": world}))
    dist.barrier()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
