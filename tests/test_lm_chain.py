"""The resumable LM chain: runs-folder contract, resume after a kill, determinism (mcutils.lm.chain).

Uses the ``smoke`` settings (toy sizes: a generation takes about a second);
the numbers mean nothing, the mechanics are what is tested.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcutils import runs
from mcutils.lm import chain, settings

import lmchains
from lmchains import N_MODELS


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache for the pre-trained toy model, shared by the LM test files."""
    yield from lmchains.private_cache(tmp_path_factory)


def _run(runs_dir, n_models=N_MODELS, **kwargs):
    return lmchains.smoke_chain(runs_dir, n_models, **kwargs)


def _metrics_files(run_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("gen_*/metrics.json"))}


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    """One uninterrupted chain, the yardstick of the other tests."""
    return _run(tmp_path_factory.mktemp("runs-reference"))


def test_runs_folder_contract(reference):
    run_dir = reference.run_dir
    assert run_dir.name == settings.smoke().run_name
    assert [m["generation"] for m in reference.metrics] == list(range(N_MODELS))
    for g in range(N_MODELS):
        folder = runs.generation_dir(run_dir, g)
        assert (folder / "metrics.json").is_file() and (folder / chain.SAMPLES).is_file()
        assert (folder / chain.MODEL).is_dir() == (g == 0)  # only generation 0's model is kept
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob("*.pkl")) and not list(run_dir.rglob("*.bin"))
    assert settings.ChainSettings.from_dict(runs.read_json(run_dir / chain.SETTINGS_FILE)) == settings.smoke()


def test_metrics_and_arrays_read_back(reference):
    m0 = reference.metrics[0]
    assert m0["training_data"]["n_real_blocks"] == m0["training_data"]["n_blocks"] == 64
    m1 = reference.metrics[1]
    assert m1["training_data"]["n_real_blocks"] == 0 and m1["training_data"]["blocks_by_source"] == {"0": 64}
    assert m0["base_test_perplexity"] > 0 and m0["source_true_perplexity"] > 1
    assert m0["test_perplexity_by_true_probability"]["rare"] > m0["test_perplexity_by_true_probability"]["common"]
    test = reference.series("test_perplexity")
    assert test.shape == (N_MODELS,) and np.all(test > 1)
    samples = reference.samples(1)
    assert samples.shape == (64, 16)
    scores = reference.per_sequence(1)
    assert set(scores) == {"gen0_perplexity", "true_perplexity"} and len(scores["gen0_perplexity"]) == 64
    assert np.median(scores["gen0_perplexity"]) == pytest.approx(reference.series("samples", "gen0_perplexity", "q50")[1])
    assert len(reference.real_per_sequence()["gen0_perplexity"]) == 64
    assert all(e["continuation"] for e in reference.examples())
    for m in reference.metrics:  # measured against the synthetic truth
        assert 0 <= m["samples"]["topic_kept"] <= 1 and 0 < m["samples"]["distinct_share"] <= 1
        assert 0 <= m["samples"]["off_grammar_share"] <= 1
    assert 0 < m0["real_data"]["off_grammar_share"] < 1
    assert m0["source_test_perplexity"] >= m0["source_true_perplexity"]  # short blocks: the topic is unsure at first


def test_chains_run_side_by_side_give_the_numbers_of_chains_run_one_by_one(reference, env, tmp_path):
    other = settings.smoke(seed=1)
    side_by_side = chain.run_chains([settings.smoke(), other], N_MODELS - 1, jobs=2, runs_dir=tmp_path,
                                    device="cpu", log=lambda message: None)
    alone = _run(tmp_path / "alone", seed=1)
    assert [c.run_dir.name for c in side_by_side] == [reference.run_dir.name, alone.run_dir.name]
    assert side_by_side[0].metrics == reference.metrics
    assert side_by_side[1].metrics == alone.metrics


def test_run_chains_refuses_a_bad_jobs_count_before_any_work(tmp_path):
    from mcutils import validate
    with pytest.raises(validate.ParameterError, match="jobs must be"):
        chain.run_chains([settings.smoke()], 1, jobs=0, runs_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_rerun_recomputes_nothing(reference, monkeypatch):
    from mcutils.lm import model as lm_model

    def refuse(*args, **kwargs):
        raise AssertionError("a complete chain was recomputed")

    monkeypatch.setattr(lm_model, "load_base_model", refuse)
    again = _run(reference.run_dir.parent)
    assert again.metrics == reference.metrics


def test_another_seed_gives_other_numbers(reference, tmp_path):
    other = _run(tmp_path, n_models=1, seed=1)
    assert other.run_dir.name != reference.run_dir.name
    assert other.metrics[0]["test_perplexity"] != reference.metrics[0]["test_perplexity"]


def test_a_longer_chain_continues_a_shorter_one_with_the_same_numbers(reference, tmp_path):
    """Determinism: a fresh run in another folder, stopped and continued, equals the reference."""
    short = _run(tmp_path, n_models=N_MODELS - 1)
    stamp = (short.run_dir / "gen_00" / "metrics.json").stat().st_mtime_ns
    longer = _run(tmp_path, n_models=N_MODELS)
    assert (longer.run_dir / "gen_00" / "metrics.json").stat().st_mtime_ns == stamp
    assert _metrics_files(longer.run_dir) == _metrics_files(reference.run_dir)


def test_a_chain_without_its_last_models_data_records_everything_else_and_keeps_that_model(reference, tmp_path):
    from mcutils import validate

    lines = []
    short = _run(tmp_path, last_data=False, log=lines.append)
    last = N_MODELS - 1
    folder = runs.generation_dir(short.run_dir, last)
    assert short.metrics[last]["samples"] is None and "no data made" in lines[-1]
    assert not (folder / chain.SAMPLES).exists() and not (folder / chain.PER_SEQUENCE).exists()
    assert (folder / chain.MODEL / chain.TRAINED).is_file()  # kept, to make the data later
    assert np.isnan(short.series("samples", "distinct_share")[last])
    for key in ("test_perplexity", "validation_perplexity", "example"):
        assert [m[key] for m in short.metrics] == [m[key] for m in reference.metrics]
    assert short.metrics[:last] == reference.metrics[:last]
    with pytest.raises(validate.ParameterError, match=f"generation={last}: the chain's last model made no data"):
        short.per_sequence(last)
    chain.verify_generations(short.run_dir, N_MODELS)  # its manifest lists what it holds


def test_a_longer_run_makes_the_last_models_data_first_the_same_as_an_uninterrupted_run(reference, tmp_path,
                                                                                         monkeypatch):
    from mcutils.lm import train

    _run(tmp_path, last_data=False)
    trained = []
    original = train.fine_tune
    monkeypatch.setattr(train, "fine_tune", lambda *a, **k: trained.append(1) or original(*a, **k))
    same_length = _run(tmp_path)  # last_data=True: the kept model makes them; nothing is trained again
    assert trained == []
    assert _metrics_files(same_length.run_dir) == _metrics_files(reference.run_dir)
    np.testing.assert_array_equal(same_length.samples(N_MODELS - 1), reference.samples(N_MODELS - 1))
    assert not (runs.generation_dir(same_length.run_dir, N_MODELS - 1) / chain.MODEL).exists()  # then deleted

    other = tmp_path / "other"
    _run(other, last_data=False)
    longer = _run(other, n_models=N_MODELS + 1, last_data=False)
    assert _metrics_files(longer.run_dir)["gen_01"] == _metrics_files(reference.run_dir)["gen_01"]
    assert longer.metrics[N_MODELS]["samples"] is None


def test_last_data_must_be_a_bool_before_any_work(tmp_path):
    from mcutils import validate
    with pytest.raises(validate.ParameterError, match="last_data must be True or False"):
        chain.run_chain(settings.smoke(), 1, runs_dir=tmp_path, last_data="no")
    with pytest.raises(validate.ParameterError, match="last_data must be True or False"):
        chain.run_chains([settings.smoke()], 1, runs_dir=tmp_path, last_data=1)
    assert not list(tmp_path.iterdir())


def test_resume_after_a_kill_gives_the_same_metrics(reference, env, tmp_path):
    """Kill a CLI chain (SIGKILL) once generation 0 is complete, rerun it: same numbers as uninterrupted."""
    import torch

    # The reference ran in this process: the CLI must use its thread count (the CLI's own default is 1).
    command = [sys.executable, "-m", "mcutils.lm", "--profile", "smoke", "--n-generations", str(N_MODELS - 1),
               "--runs-dir", str(tmp_path), "--device", "cpu", "--no-progress", "--threads", str(torch.get_num_threads())]
    run_dir = tmp_path / settings.smoke().run_name
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not runs.is_complete(run_dir, 0) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert runs.is_complete(run_dir, 0) and not runs.is_complete(run_dir, N_MODELS - 1), "killed too late to test"
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert _metrics_files(run_dir) == _metrics_files(reference.run_dir)


def test_resume_inside_a_generation_reuses_the_saved_model(reference, tmp_path):
    """A run killed after saving generation 1's model, before its samples, picks that model up."""
    import shutil

    from mcutils.lm import model as lm_model

    kept = chain.run_chain(settings.smoke(), 1, runs_dir=tmp_path / "kept", device="cpu", progress=False,
                           keep_models=True, log=lambda m: None)
    gen1 = kept.run_dir / "gen_01"
    assert (gen1 / chain.MODEL / chain.TRAINED).is_file()
    (gen1 / "metrics.json").unlink()
    (gen1 / chain.SAMPLES).unlink()
    calls = []
    original = lm_model.fresh_copy
    lm_model.fresh_copy = lambda model: calls.append(1) or original(model)
    try:
        resumed = chain.run_chain(settings.smoke(), 1, runs_dir=tmp_path / "kept", device="cpu",
                                  progress=False, log=lambda m: None)
    finally:
        lm_model.fresh_copy = original
    assert calls == []  # nothing was trained again
    assert resumed.metrics == reference.metrics[:2]


def test_other_policies_reuse_generation_zero(reference, tmp_path):
    import shutil

    shutil.copytree(reference.run_dir, tmp_path / reference.run_dir.name)
    accumulate = _run(tmp_path, n_models=2, policy="accumulate")
    assert accumulate.run_dir != reference.run_dir
    # generation 0 was copied, not recomputed: even its timing file is the same
    for name in ("metrics.json", "timing.json"):
        assert (accumulate.run_dir / "gen_00" / name).read_text() == (reference.run_dir / "gen_00" / name).read_text()
    assert accumulate.metrics[1]["training_data"]["n_blocks"] == 128  # real + generation 0's samples


def test_a_chain_that_only_generates_differently_reuses_the_fine_tuned_generation_zero_model(reference, tmp_path,
                                                                                              monkeypatch):
    """The repetition-penalty ablation trains generation 0 exactly as its unpenalised chain: copied, not trained."""
    import shutil

    from mcutils.lm import model as lm_model

    shutil.copytree(reference.run_dir, tmp_path / reference.run_dir.name)
    calls, notes = [], []
    original = lm_model.fresh_copy
    monkeypatch.setattr(lm_model, "fresh_copy", lambda model: calls.append(1) or original(model))
    penalised = _run(tmp_path, n_models=1, log=notes.append, repetition_penalty=1.5)
    assert penalised.run_dir != reference.run_dir
    assert calls == []  # generation 0 was not fine-tuned again
    assert any("the same training; only generation differs" in note for note in notes)
    ours, theirs = penalised.run_dir / "gen_00" / chain.MODEL, reference.run_dir / "gen_00" / chain.MODEL
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    for path in theirs.iterdir():
        assert (ours / path.name).read_bytes() == path.read_bytes()
    # the same model scores the same real test blocks; what it generated is its own
    assert penalised.metrics[0]["test_perplexity"] == reference.metrics[0]["test_perplexity"]
    assert not np.array_equal(penalised.samples(0), reference.samples(0))


def test_a_chain_that_trains_differently_fine_tunes_its_own_generation_zero(reference, tmp_path, monkeypatch):
    import shutil

    from mcutils.lm import model as lm_model

    shutil.copytree(reference.run_dir, tmp_path / reference.run_dir.name)
    calls = []
    original = lm_model.fresh_copy
    monkeypatch.setattr(lm_model, "fresh_copy", lambda model: calls.append(1) or original(model))
    other = _run(tmp_path, n_models=1, learning_rate=reference.settings.learning_rate * 2)
    assert calls == [1]
    assert other.metrics[0]["test_perplexity"] != reference.metrics[0]["test_perplexity"]


def test_the_one_line_summary_names_only_the_tail_the_real_data_has():
    from mcutils.lm.chain import _one_line

    metrics = {"generation": 3, "training_data": {"n_blocks": 512, "n_real_blocks": 0},
               "training": {"best_epoch": 1}, "test_perplexity": 60.0,
               "samples": {"gen0_perplexity": {"q50": 3.6, "q95": 4.5},
                           "tail": {"n_rare_words": 0, "rare_word_survival": float("nan"),
                                    "n_rare_transitions": 40, "rare_transition_survival": 0.25}}}
    line = _one_line(metrics)
    assert "rare transitions kept 25%" in line and "rare words" not in line and "nan" not in line
    metrics["samples"]["tail"].update(n_rare_words=10, rare_word_survival=0.5)
    assert "rare words kept 50%" in _one_line(metrics)


def test_the_from_scratch_chains_one_line_summary_names_only_the_tail_the_real_data_has():
    from mcutils.lm.scratch import _one_line

    metrics = {"generation": 2, "training_data": {"n_tokens": 4096, "n_real_tokens": 0},
               "test_cross_entropy": 2.5,
               "synthetic": {"tail": {"n_rare_words": 0, "rare_word_survival": float("nan"),
                                      "n_rare_transitions": 462, "rare_transition_survival": 0.5}}}
    line = _one_line(metrics)
    assert "rare transitions kept 50%" in line and "rare tokens" not in line and "nan" not in line
