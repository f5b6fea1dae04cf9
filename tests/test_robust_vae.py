"""The VAE chain and MNIST loader against unusable runs folders, damaged generations and an unreachable hub (issue 12)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from mcutils import runs, vae
from mcutils.runs import CorruptRunError, RunLockedError, RunsDirError

import test_robust_common as common


@pytest.fixture(scope="module")
def data():
    images, labels = vae.load_digits_images()
    return images[:96], labels[:96]


KW = dict(epochs=1, batch_size=64, seed=0, n_grid=2, log=lambda *_: None)


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(vae, "train_vae", lambda *a, **k: pytest.fail("trained although it should have refused"))
    monkeypatch.setattr(vae, "digit_classifier", lambda *a, **k: pytest.fail("worked although it should refuse"))


def test_a_runs_root_that_is_a_file_is_refused_before_work_naming_runs_dir(data, tmp_path, no_training):
    target = tmp_path / "runs"
    target.write_text("x")
    with pytest.raises(RunsDirError, match=r"runs_root \(the chapter's runs_dir\) .* is a file, not a folder"):
        vae.vae_chain(*data, 1, runs_root=target, **KW)


def test_a_read_only_runs_root_is_refused_before_work(data, tmp_path, no_training):
    if not common.can_mount() and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root ignores permissions and cannot mount here")
    with (common.small_tmpfs(tmp_path / "ro", "1m") if common.can_mount() else _folder(tmp_path / "ro")) as where:
        common.read_only_dir(where)
        try:
            with pytest.raises(RunsDirError, match="runs_dir.*is not writable"):
                vae.vae_chain(*data, 1, runs_root=where, **KW)
        finally:
            os.chmod(where, 0o755) if not common.can_mount() else None


class _folder:
    def __init__(self, where):
        self.where = where

    def __enter__(self):
        self.where.mkdir(parents=True, exist_ok=True)
        return self.where

    def __exit__(self, *exc):
        return False


def test_a_full_runs_root_is_refused_before_work(data, tmp_path, no_training):
    with common.small_tmpfs(tmp_path / "full", "1m") as where:
        common.fill(where)
        with pytest.raises(RunsDirError, match="runs_dir.*free, less than the"):
            vae.vae_chain(*data, 1, runs_root=where, **KW)


def test_stored_generations_are_checked_and_the_folder_locked(data, tmp_path):
    chain = vae.vae_chain(*data, 1, runs_root=tmp_path, **KW)
    run_dir = tmp_path / os.path.basename(chain.run_dir)
    # a complete chain reads back; a second writer is refused while one holds the folder
    with runs.locked(run_dir):
        assert vae.vae_chain(*data, 1, runs_root=tmp_path, **KW).metrics == chain.metrics  # reading: no lock
        with pytest.raises(RunLockedError):
            vae.vae_chain(*data, 2, runs_root=tmp_path, **KW)
    # a metrics file copied into another generation is refused with what to delete
    shutil.copy(run_dir / "gen_00" / "metrics.json", run_dir / "gen_01" / "metrics.json")
    with pytest.raises(CorruptRunError, match="gen_01/metrics.json says it is generation 0, not 1.*delete"):
        vae.vae_chain(*data, 1, runs_root=tmp_path, **KW)
    shutil.copy(run_dir / "gen_00" / "metrics.json", run_dir / "gen_01" / "metrics.json")
    (run_dir / "gen_01" / "metrics.json").write_text(json.dumps({**json.loads(
        (run_dir / "gen_00" / "metrics.json").read_text()), "generation": 1}))
    (run_dir / "gen_01" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CorruptRunError, match="gen_01/model.safetensors is damaged"):
        vae.vae_chain(*data, 1, runs_root=tmp_path, **KW)
    (run_dir / "gen_01" / "metrics.json").write_text('{"generation": 1, "final')
    with pytest.raises(CorruptRunError, match="gen_01/metrics.json is damaged"):
        vae.vae_chain(*data, 1, runs_root=tmp_path, **KW)


def test_mnist_fails_fast_when_the_hub_does_not_answer(tmp_path):
    """HF_HUB_OFFLINE unset and the hub unreachable: one request, then the error (it took 36 s)."""
    script = common.MNIST_TIMING_SCRIPT
    done = common.python(script, env={"HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None,
                                      "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9",
                                      "HF_HOME": str(tmp_path / "hf"),
                                      "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines and lines[0] != "loaded", done.stdout + done.stderr
    seconds, message = float(lines[0]), "\n".join(lines[1:])
    assert "ylecun/mnist" in message and "did not answer" in message and "dataset='digits'" in message
    assert seconds < 10
