"""The LM engine against bad input, damaged runs folders, full or read-only disks and a second process (issue 12).

Every case is refused before any work with one line naming the thing and
what to do, or recovered.  "Before any work" is checked by making the base
model's loading (the first expensive step) fail the test.  Smoke settings: a
generation takes about a second; the chains are copies of one reference.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcutils import runs, validate
from mcutils.lm import chain, settings
from mcutils.lm.__main__ import main
from mcutils.runs import CorruptRunError, RunLockedError, RunsDirError

import lmchains
import test_robust_common as common
from lmchains import N_MODELS


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache for the pre-trained toy model, shared by the LM test files."""
    yield from lmchains.private_cache(tmp_path_factory)


def _run(runs_dir, n_models=N_MODELS, **kwargs):
    return lmchains.smoke_chain(runs_dir, n_models, **kwargs)


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("robust-reference"))


@pytest.fixture
def copy(reference, tmp_path):
    """A fresh copy of the reference chain: (runs_dir, run_dir)."""
    target = tmp_path / "runs" / reference.run_dir.name
    shutil.copytree(reference.run_dir, target)
    return tmp_path / "runs", target


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the chain starts any work (loading the base model is its first step)."""
    from mcutils.lm import model as lm_model

    def refuse(*args, **kwargs):
        raise AssertionError("work started although the run should have been refused first")

    monkeypatch.setattr(lm_model, "load_base_model", refuse)
    monkeypatch.setattr(lm_model, "ensure_tiny", refuse)


def _metrics(run_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("gen_*/metrics.json"))}


def _one_line(text: str) -> bool:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in text


# -- the command line: flags, settings files, bounds ---------------------------------

def _captured_settings(monkeypatch, argv):
    seen = {}

    def fake_run_chain(s, n, **kwargs):
        seen["settings"], seen["n"] = s, n
        raise validate.ParameterError("stop here")

    monkeypatch.setattr(chain, "run_chain", fake_run_chain)
    assert main(argv) == 2
    return seen["settings"]


def test_a_settings_file_value_is_not_replaced_by_a_flag_default(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"seed": 5, "epochs": 3}))
    assert _captured_settings(monkeypatch, ["--profile", "smoke", "--settings", str(path)]).seed == 5
    given = _captured_settings(monkeypatch, ["--profile", "smoke", "--settings", str(path), "--seed", "7"])
    assert (given.seed, given.epochs) == (7, 3)  # a flag given explicitly wins; the file keeps the rest
    assert _captured_settings(monkeypatch, ["--profile", "smoke"]).seed == 0


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(chain, "run_chain", interrupted)
    try:
        assert main(["--profile", "smoke"]) == 130
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a traceback")
    err = capsys.readouterr().err
    assert _one_line(err) and "interrupted" in err


@pytest.mark.parametrize("args, message", [
    (["--seed", "4294967297"], "seed must be an integer <= 4294967295"),
    (["--seed", "4294967296"], "seed must be an integer <= 4294967295"),
    (["--n-generations", "1000"], "n_generations must be an integer <= 999"),
    (["--precision", "fp16", "--device", "cpu"], "precision='fp16' needs a CUDA GPU"),
    (["--threads", "0"], "threads must be an integer >= 1"),
])
def test_values_the_code_cannot_run_are_refused_at_once(args, message):
    start = time.perf_counter()
    done = common.python("import sys; from mcutils.lm.__main__ import main; sys.exit(main(sys.argv[1:]))",
                         "--profile", "smoke", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and _one_line(done.stderr)
    assert time.perf_counter() - start < 60


def test_the_largest_seed_derives_only_seeds_numpy_takes():
    s = settings.smoke(seed=settings.MAX_SEED)
    assert settings.MAX_SEED == 2**32 - 1  # derived by SeedSequence, so every seed numpy takes is one
    for g in (0, 1, settings.MAX_GENERATIONS - 1):  # generation g's training seed (Trainer's set_seed)
        np.random.seed(chain.training_seed(s.seed, g))
    assert chain.training_seed(0, 1) != chain.training_seed(0, 2) != chain.training_seed(1, 1)
    with pytest.raises(validate.ParameterError, match="language.seed"):
        settings.smoke(language=settings.LanguageSpec(seed=2**32, n_words=64, n_topics=4, topic_words=8))
    # names of valid chains do not change with the bounds
    assert settings.quick().run_name == settings.quick(seed=0).run_name


@pytest.mark.parametrize("content, message", [
    ('{"seed": 5', "--settings"),
    ('[1, 2]', "expected a JSON object"),
    ('{"seed": 5.5}', "seed must be an integer"),
    ('{"dataset_config": 3}', "dataset_config must be"),
    ('{"language": 3}', "language must be an object"),
    ('{"learning_rate": NaN}', "learning_rate must be a finite"),
])
def test_bad_settings_files_are_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "s.json"
    path.write_text(content)
    assert main(["--profile", "smoke", "--settings", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and _one_line(err)


def test_precision_the_device_cannot_run_is_refused_by_the_engine(tmp_path, no_work):
    with pytest.raises(validate.ParameterError, match="fp16"):
        chain.run_chain(settings.smoke(precision="fp16"), 0, runs_dir=tmp_path, device="cpu", progress=False)
    assert not any(tmp_path.iterdir())


def test_a_diverging_learning_rate_stops_at_once_naming_it(env, tmp_path, capsys):
    from mcutils.lm.train import TrainingDiverged

    calls = []
    from mcutils.lm import generate
    original = generate.beam_continuations
    generate.beam_continuations = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with pytest.raises(TrainingDiverged, match=r"learning_rate=1e\+30") as caught:
            _run(tmp_path, n_models=1, learning_rate=1e30)
    finally:
        generate.beam_continuations = original
    assert "epoch 1" in str(caught.value) and calls == []  # the first epoch, before any generation
    run_dir = tmp_path / settings.smoke(learning_rate=1e30).run_name
    assert not (run_dir / "gen_00" / chain.MODEL).exists() and not runs.is_complete(run_dir, 0)
    assert not list(run_dir.rglob(".*.tmp")) and not list(run_dir.rglob(".model.*"))
    # the command line says so in one line, exit code 2 (a setting to change)
    rc = main(["--profile", "smoke", "--learning-rate", "1e30", "--runs-dir", str(tmp_path), "--device", "cpu",
               "--no-progress", "--n-generations", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "learning_rate=1e+30" in err and _one_line(err)


# -- a complete generation is verified before it is trusted ---------------------------

def test_metrics_record_what_a_generation_holds(reference):
    for g in range(N_MODELS):
        stored = runs.read_json(runs.generation_dir(reference.run_dir, g) / runs.METRICS)
        manifest = stored[chain.MANIFEST]
        assert manifest["generation"] == g and stored["generation"] == g
        assert manifest["files"][f"gen_{g:02d}/samples.arrow"]["rows"] == 64
        assert f"gen_{g:02d}/per_sequence.arrow" in manifest["files"]
        assert len(manifest["base_model"]) == 16
        assert set(manifest["inputs"]) == {f"gen_{h:02d}/samples.arrow" for h in range(g)}
    files0 = runs.read_json(reference.run_dir / "gen_00" / runs.METRICS)[chain.MANIFEST]["files"]
    assert {"data/train.arrow", "gen_00/real_per_sequence.arrow"} <= set(files0)
    assert any(name.startswith("gen_00/model/") for name in files0)
    assert chain.MANIFEST not in reference.metrics[0]  # the chain's metrics are what they were


def test_a_metrics_file_copied_into_a_new_generation_is_refused(copy, no_work):
    runs_dir, run_dir = copy
    (run_dir / "gen_02").mkdir()
    shutil.copy(run_dir / "gen_01" / "metrics.json", run_dir / "gen_02" / "metrics.json")
    with pytest.raises(CorruptRunError, match=r"gen_02/metrics.json says it is generation 1, not 2") as caught:
        _run(runs_dir, n_models=3)
    assert f"delete {run_dir / 'gen_02'}" in str(caught.value)


@pytest.mark.parametrize("n", [N_MODELS, N_MODELS + 1])  # reading a complete chain, and extending it
def test_samples_with_other_rows_are_refused(copy, no_work, n):
    from mcutils.lm.data import read_blocks, save_blocks

    runs_dir, run_dir = copy
    path = run_dir / "gen_01" / chain.SAMPLES
    save_blocks(path, read_blocks(path)[:16])  # a valid Arrow file, 16 rows instead of 64
    with pytest.raises(CorruptRunError, match="holds 16 rows, the generation recorded 64") as caught:
        _run(runs_dir, n_models=n)
    assert str(path) in str(caught.value) and "delete" in str(caught.value)


@pytest.mark.parametrize("name", [chain.SAMPLES, chain.PER_SEQUENCE])
def test_missing_files_of_a_complete_generation_are_found_at_once(copy, no_work, name):
    runs_dir, run_dir = copy
    (run_dir / "gen_01" / name).unlink()
    with pytest.raises(CorruptRunError, match=f"gen_01/{name} is missing"):
        _run(runs_dir, n_models=N_MODELS)


@pytest.mark.parametrize("what", ["metrics", "arrow"])
def test_truncated_files_are_reported_with_their_path(copy, no_work, what):
    runs_dir, run_dir = copy
    path = run_dir / "gen_00" / ("metrics.json" if what == "metrics" else chain.PER_SEQUENCE)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptRunError) as caught:
        _run(runs_dir, n_models=N_MODELS + 1)  # extending: the damage in generation 0 is found before generation 2
    message = str(caught.value)
    assert str(path) in message and "delete" in message
    assert "Expecting" not in message or "not valid JSON" in message


def test_truncated_arrow_read_directly_names_the_file(tmp_path):
    from mcutils.lm.data import read_blocks, save_blocks

    path = save_blocks(tmp_path / "x.arrow", np.zeros((4, 3), dtype=np.int64))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(CorruptRunError, match=f"{path} is damaged"):
        read_blocks(path)
    with pytest.raises(CorruptRunError, match="is missing"):
        read_blocks(tmp_path / "none.arrow")


def test_a_complete_generation_after_a_gap_is_refused(copy, no_work):
    runs_dir, run_dir = copy
    (run_dir / "gen_00" / "metrics.json").unlink()
    with pytest.raises(CorruptRunError, match="gen_01 is complete but gen_00 before it is not"):
        _run(runs_dir, n_models=N_MODELS)


def test_replaced_training_samples_are_found(copy, no_work):
    """gen_01 was trained on gen_00's samples: replacing them (consistently with gen_00's files) is found."""
    runs_dir, run_dir = copy
    metrics = runs.read_json(run_dir / "gen_00" / "metrics.json")
    from mcutils.lm.data import read_blocks, save_blocks
    path = run_dir / "gen_00" / chain.SAMPLES
    save_blocks(path, read_blocks(path)[::-1])
    metrics[chain.MANIFEST]["files"]["gen_00/samples.arrow"]["sha256"] = runs.file_sha256(path)
    metrics[chain.MANIFEST]["files"]["gen_00/samples.arrow"]["bytes"] = path.stat().st_size
    runs.atomic_write_json(run_dir / "gen_00" / "metrics.json", metrics)
    with pytest.raises(CorruptRunError, match="generation 1 was trained on samples that are no longer in"):
        _run(runs_dir, n_models=N_MODELS)


def test_a_killed_runs_partial_samples_with_other_rows_are_refused(copy, no_work):
    from mcutils.lm.data import read_blocks, save_blocks

    runs_dir, run_dir = copy
    (run_dir / "gen_01" / "metrics.json").unlink()  # killed after the samples, before the metrics
    path = run_dir / "gen_01" / chain.SAMPLES
    save_blocks(path, read_blocks(path)[:16])
    with pytest.raises(CorruptRunError, match="holds 16 rows, not the 64 this chain makes; delete it"):
        _run(runs_dir, n_models=N_MODELS)


def test_a_resume_checks_the_base_model(copy, monkeypatch):
    import torch

    from mcutils.lm import model as lm_model

    runs_dir, run_dir = copy
    assert runs.read_json(run_dir / chain.BASE_MODEL)["fingerprint"] == \
        runs.read_json(run_dir / "gen_00" / "metrics.json")[chain.MANIFEST]["base_model"]
    original = lm_model.load_base_model

    def other_base(*args, **kwargs):
        model, tokenizer = original(*args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
        return model, tokenizer

    monkeypatch.setattr(lm_model, "load_base_model", other_base)
    monkeypatch.setattr(lm_model, "fresh_copy", lambda m: pytest.fail("trained although the base model changed"))
    with pytest.raises(CorruptRunError, match="another base model"):
        _run(runs_dir, n_models=N_MODELS + 1)


def test_a_damaged_sibling_generation_zero_is_not_adopted(copy, env):
    runs_dir, run_dir = copy
    (run_dir / "gen_00" / chain.REFERENCE).write_bytes(b"garbage")
    notes = []
    other = _run(runs_dir, n_models=1, policy="accumulate", log=notes.append)
    assert any("not reusing generation 0" in n and run_dir.name in n for n in notes)
    fresh = other.run_dir / "gen_00"
    assert (fresh / chain.REFERENCE).read_bytes() != b"garbage"
    chain.verify_generations(other.run_dir, 1)  # computed anew, consistent
    # a sound sibling is still adopted (see test_lm_chain); the recomputed generation 0 has the same numbers
    ref = runs.read_json(run_dir / "gen_00" / "metrics.json")
    assert runs.read_json(fresh / "metrics.json")["test_perplexity"] == ref["test_perplexity"]


def test_a_model_folder_deleted_under_a_run_is_named_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(CorruptRunError, match=f"{tmp_path / 'gen_01' / 'model'} is missing"):
        chain._load_model(tmp_path / "gen_01" / "model")


# -- the runs folder: a file, read-only, full ----------------------------------------

def test_a_runs_folder_that_is_a_file_is_refused(tmp_path, capsys, no_work):
    target = tmp_path / "runs"
    target.write_text("not a folder")
    rc = main(["--profile", "smoke", "--runs-dir", str(target), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{target} is a file, not a folder" in err and _one_line(err)
    with pytest.raises(RunsDirError, match="is a file, not a folder"):
        _run(target, n_models=1)


def test_a_runs_folder_inside_a_file_is_refused(tmp_path, no_work):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunsDirError, match="cannot be created|is a file"):
        _run(tmp_path / "file" / "runs", n_models=1)


def test_extending_a_chain_in_a_read_only_folder_is_refused_before_work(reference, tmp_path, monkeypatch):
    mount = tmp_path / "ro"
    with common.small_tmpfs(mount, "8m") if common.can_mount() else _plain(mount):
        shutil.copytree(reference.run_dir, mount / reference.run_dir.name)
        common.read_only_dir(mount)
        if not common.can_mount():
            os.chmod(mount / reference.run_dir.name, 0o555)
        try:
            assert _run(mount, n_models=N_MODELS).metrics == reference.metrics  # reading needs no write
            from mcutils.lm import model as lm_model
            monkeypatch.setattr(lm_model, "load_base_model", lambda *a, **k: pytest.fail("work started"))
            with pytest.raises(RunsDirError, match="is not writable"):
                _run(mount, n_models=N_MODELS + 1)
        finally:
            if not common.can_mount():
                os.chmod(mount / reference.run_dir.name, 0o755)
                os.chmod(mount, 0o755)


class _plain:
    def __init__(self, where):
        self.where = where

    def __enter__(self):
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            pytest.skip("root ignores permissions and cannot mount here")
        self.where.mkdir(parents=True, exist_ok=True)
        return self.where

    def __exit__(self, *exc):
        return False


def test_a_full_runs_folder_is_refused_before_work(env, tmp_path, no_work):
    with common.small_tmpfs(tmp_path / "full", "2m") as mount:
        common.fill(mount)
        with pytest.raises(RunsDirError, match="free, less than the"):
            _run(mount, n_models=1)


def test_a_disk_filling_up_during_a_generation_leaves_no_scratch_and_resumes(reference, tmp_path, monkeypatch):
    """Real ENOSPC (a 4 MiB tmpfs filled up after generation 0), while saving generation 1's model."""
    with common.small_tmpfs(tmp_path / "small", "4m") as mount:
        shutil.copytree(reference.run_dir, mount / reference.run_dir.name)
        run_dir = mount / reference.run_dir.name
        shutil.rmtree(run_dir / "gen_01")
        (run_dir / "gen_00" / ".metrics.json.abc.tmp").write_text("left by a kill")
        monkeypatch.setattr(runs, "MIN_FREE_BYTES", 0)
        monkeypatch.setattr(chain, "room_needed", lambda n_bytes: 0)
        filler = common.fill(mount)
        with pytest.raises(RunsDirError, match="No space left on device") as caught:
            _run(mount, n_models=N_MODELS)
        assert "rerun" in str(caught.value)
        assert not list(run_dir.rglob(".model.*")) and not list(run_dir.rglob(".*.tmp"))
        assert not runs.is_complete(run_dir, 1)
        filler.unlink()
        monkeypatch.undo()
        assert _metrics(_run(mount, n_models=N_MODELS).run_dir) == _metrics(reference.run_dir)


def test_a_failing_save_leaves_no_scratch_folder(copy, monkeypatch):
    """The same without a tmpfs: the model's writer fails with ENOSPC half-way (simulated)."""
    from transformers import PreTrainedModel

    runs_dir, run_dir = copy
    shutil.rmtree(run_dir / "gen_01")

    def full(self, folder, *args, **kwargs):
        Path(folder, "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder, "model.safetensors")))

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    with pytest.raises(RunsDirError, match="No space left on device"):
        _run(runs_dir, n_models=N_MODELS)
    assert not list(run_dir.rglob(".model.*")) and not (run_dir / "gen_01" / chain.MODEL).exists()


# -- two processes on one chain ----------------------------------------------------------

def _threads() -> int:
    """This process's torch thread count: the reference chain ran with it (the CLI's default is 1)."""
    import torch
    return torch.get_num_threads()


def test_a_second_process_on_the_same_chain_is_refused(copy, env):
    runs_dir, run_dir = copy
    shutil.rmtree(run_dir / "gen_01")
    command = [sys.executable, "-m", "mcutils.lm", "--profile", "smoke", "--n-generations", str(N_MODELS - 1),
               "--runs-dir", str(runs_dir), "--device", "cpu", "--no-progress", "--threads", str(_threads())]
    with runs.locked(run_dir):  # this process writes the chain
        start = time.perf_counter()
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stderr
        assert "is being written by another process (pid" in second.stderr and _one_line(second.stderr)
        assert time.perf_counter() - start < 60 and not (run_dir / "gen_01").exists()
        with pytest.raises(RunLockedError, match=str(os.getpid())):
            _run(runs_dir, n_models=N_MODELS)
    assert subprocess.run(command, env=env, capture_output=True, text=True, timeout=300).returncode == 0


@pytest.mark.slow
def test_two_processes_started_together_do_the_work_once(copy, env, reference):
    runs_dir, run_dir = copy
    shutil.rmtree(run_dir / "gen_01")
    command = [sys.executable, "-m", "mcutils.lm", "--profile", "smoke", "--n-generations", str(N_MODELS - 1),
               "--runs-dir", str(runs_dir), "--device", "cpu", "--no-progress", "--threads", str(_threads())]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while first.poll() is None and time.monotonic() < deadline:  # until the first one holds the lock
        try:
            with runs.locked(run_dir):
                pass
        except RunLockedError:
            break
        time.sleep(0.05)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 1 and "being written by another process" in second.stderr
    assert _metrics(run_dir) == _metrics(reference.run_dir)
