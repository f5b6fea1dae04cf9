"""The paper profile's code runs end to end on a CPU, offline, before anyone pays for a GPU (issue #16).

``profiles/paper-smoke.yaml`` is the paper profile with smaller sizes and the
hub's OPT-125m, wikitext-2 and MNIST replaced by the local stand-ins of
:mod:`mcutils.smoke`.  The stand-ins are checked for the shapes the paper
profile relies on; then the batch runner executes 05 and 06 under that
profile (05 whole; of 06 one chain through ``python -m mcutils.lm`` with the
chapter's settings, since the chapter's four chains of OPT-125m's size take
about 13 minutes; ``MCUTILS_PAPER_SMOKE_06=1`` runs the chapter too), and
the results must show the paper profile's code paths: 28×28 images read
through ``load_dataset``, the engine's paper settings on a model of
125,239,296 parameters (OPT-125m's count), 5-way beam search by Hugging Face
``generate``.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mcutils import lm, reproduce, smoke, vae
from mcutils.reproduce.profiles import load_profile
from mcutils.validate import ParameterError

ROOT = Path(__file__).resolve().parents[1]
OPT125M_PARAMETERS = 125_239_296  # facebook/opt-125m's parameter count


@pytest.fixture(scope="module")
def standins():
    """The stand-ins where the profile expects them (built once, then reused by every run)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    return smoke.ensure_standins(ROOT / ".mcutils_cache" / "paper-smoke")


def test_the_stand_in_model_has_opt125m_configuration_and_an_opt_style_tokenizer(standins):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(standins[smoke.MODEL])
    assert (config.model_type, config.vocab_size, config.hidden_size, config.word_embed_proj_dim) == \
        ("opt", 50272, 768, 768)
    assert (config.num_hidden_layers, config.num_attention_heads, config.ffn_dim) == (12, 12, 3072)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (1, 2, 2)
    tokenizer = AutoTokenizer.from_pretrained(standins[smoke.MODEL])
    ids = tokenizer([" = Title = \n", "", "any text, even unseen: zebra 1999"])["input_ids"]
    assert all(row[0] == 2 for row in ids) and ids[1] == [2]  # OPT starts every text with </s>
    assert max(max(row) for row in ids) < len(tokenizer) < config.vocab_size
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (1, 2)


def test_the_stand_in_data_sets_have_the_real_ones_splits_and_columns(standins):
    from datasets import load_dataset

    wikitext = load_dataset(str(standins[smoke.WIKITEXT]))
    assert set(wikitext) == {"train", "validation", "test"} and wikitext["train"].column_names == ["text"]
    lines = list(wikitext["train"]["text"])
    assert "" in lines and any(line.startswith(" = ") and line.endswith(" = \n") for line in lines)
    assert any(line.startswith(" = = ") for line in lines)
    mnist = load_dataset(str(standins[smoke.MNIST]))
    assert set(mnist) == {"train", "test"} and set(mnist["train"].column_names) == {"image", "label"}
    assert mnist["train"][0]["image"].size == (28, 28) and mnist["train"][0]["image"].mode == "L"
    assert mnist["train"].features["label"].num_classes == 10
    stories = load_dataset(str(standins[smoke.TINYSTORIES]))
    assert set(stories) == {"train", "validation"} and stories["train"].column_names == ["text"]
    assert all(text.startswith("Once upon a time") for text in stories["validation"]["text"])


def test_building_the_stand_ins_again_keeps_them(standins):
    before = {name: (folder / smoke.STAMP).stat().st_mtime_ns for name, folder in standins.items()}
    again = smoke.ensure_standins(ROOT / ".mcutils_cache" / "paper-smoke", log=pytest.fail)
    assert {name: (folder / smoke.STAMP).stat().st_mtime_ns for name, folder in again.items()} == before


def test_vae_reads_an_mnist_shaped_folder_as_the_hubs_mnist(standins):
    images, labels = vae.load_images(str(standins[smoke.MNIST]))
    assert images.shape == (smoke.MNIST_TRAIN, 1, 28, 28) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(labels.tolist()) == set(range(10))
    with pytest.raises(ParameterError, match="local folder in MNIST's layout"):
        vae.load_images(str(standins[smoke.MNIST] / "no-such-folder"))


def test_lm_train_tokens_caps_a_real_datasets_training_blocks(standins):
    folder = str(standins[smoke.WIKITEXT])
    _, overrides = lm.chapter_settings("custom", "paper", "", folder, 512, lm_batch_size=8)
    assert overrides["max_train_blocks"] == 8 and overrides["batch_size"] == 8
    with pytest.raises(ParameterError, match="less than one block of 64 tokens"):
        lm.chapter_settings("custom", "paper", "", folder, 32)


def test_the_profile_points_at_the_stand_ins_from_any_checkout():
    profile = load_profile("paper-smoke", ROOT)
    paper = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())["chapters"]
    folder = str((ROOT / ".mcutils_cache" / "paper-smoke").resolve())
    assert profile.chapters["05_vae"]["dataset"] == f"{folder}/mnist"
    assert profile.chapters["06_opt125m"]["lm_model"] == f"{folder}/opt-125m"
    # Sizes only: every chapter of the paper profile is here, and each value the paper profile sets that is
    # not a size or a data source is the same.
    sources = {"dataset", "lm_model", "lm_dataset", "lm_profile", "vae_dataset", "scratch_dataset", "scratch_tokenizer",
               "scratch_profile"}
    sizes = {"n_generations", "n_runs", "n_seeds", "epochs", "epochs_setting1", "epochs_setting2", "sample_sizes",
             "snapshot_generations", "accumulate_generations", "official_runs", "official_generations",
             "lm_train_tokens", "subsample_runs", "gaussian_runs", "lm_generations", "n_grid", "vae_epochs",
             "vae_generations", "scratch_train_tokens"}
    assert set(paper) <= set(profile.chapters)
    for chapter, params in paper.items():
        for name, value in (params or {}).items():
            if name not in sources | sizes:
                assert profile.chapters[chapter][name] == value, (chapter, name)


def _outputs_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def _check_opt125m_chain(chain: Path) -> None:
    """A chain of the engine's paper profile on the stand-ins: OPT-125m's size, 5-way beams by generate."""
    settings = json.loads((chain / "settings.json").read_text())
    assert (settings["beam_backend"], settings["num_beams"], settings["block_size"]) == ("hf", 5, 64)
    assert (settings["learning_rate"], settings["min_learning_rate"]) == (2e-5, 1e-6)
    gen0 = json.loads((chain / "gen_00" / "metrics.json").read_text())
    assert gen0["n_parameters"] == OPT125M_PARAMETERS
    gen1 = json.loads((chain / "gen_01" / "metrics.json").read_text())
    assert np.isfinite(gen1["test_perplexity"]) and gen1["training_data"]


@pytest.mark.slow
def test_chapter_05_runs_the_paper_profiles_code_on_the_mnist_stand_in(standins, tmp_path):
    stream = io.StringIO()
    outcomes, _ = reproduce.run("paper-smoke", chapters="05_vae", output_dir=str(tmp_path / "out"), build=False,
                                params={"runs_dir": str(tmp_path / "runs")}, stream=stream)
    assert [(o.chapter, o.status) for o in outcomes if o.chapter == "05_vae"] == [("05_vae", "ok")], \
        stream.getvalue()
    text = _outputs_text(tmp_path / "out" / "book" / "05_vae.ipynb")
    assert "05_vae | profile: custom" in text
    assert f"{standins[smoke.MNIST]}: {smoke.MNIST_TRAIN} images of 28x28 pixels" in text


@pytest.mark.slow
def test_one_chain_of_06_runs_the_engines_paper_profile_on_the_opt125m_stand_in(standins, tmp_path):
    # The chapter's settings for setting 1 under paper-smoke, through the command line the chapter's
    # chains share (one chain of two models: the chapter itself runs four, about 13 minutes).
    p = load_profile("paper-smoke", ROOT).chapters["06_opt125m"]
    engine, overrides = lm.chapter_settings("custom", p["lm_profile"], p["lm_model"], p["lm_dataset"],
                                            p["lm_train_tokens"], lm_batch_size=p["lm_batch_size"])
    settings = lm.for_profile(engine, seed=0, policy="replace", epochs=p["epochs_setting1"], **overrides)
    command = [sys.executable, "-m", "mcutils.lm", "--profile", "paper", "--model", settings.model,
               "--dataset", settings.dataset, "--max-train-blocks", str(settings.max_train_blocks),
               "--batch-size", str(settings.batch_size), "--epochs", str(settings.epochs),
               "--n-generations", str(p["n_generations"]), "--runs-dir", str(tmp_path / "runs"),
               "--device", "cpu", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    chain = tmp_path / "runs" / settings.run_name
    assert chain.is_dir(), f"expected the chapter's run name {settings.run_name}: {os.listdir(tmp_path / 'runs')}"
    _check_opt125m_chain(chain)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MCUTILS_PAPER_SMOKE_06") != "1",
                    reason="the whole of 06 on the stand-ins takes about 13 minutes on 2 cores (four chains of "
                           "OPT-125m's size); set MCUTILS_PAPER_SMOKE_06=1 to run it")
def test_chapter_06_runs_the_paper_profiles_code_on_the_stand_ins(standins, tmp_path):
    stream = io.StringIO()
    outcomes, _ = reproduce.run("paper-smoke", chapters="06_opt125m", output_dir=str(tmp_path / "out"),
                                build=False, params={"runs_dir": str(tmp_path / "runs")}, stream=stream)
    assert [(o.chapter, o.status) for o in outcomes if o.chapter == "06_opt125m"] == [("06_opt125m", "ok")], \
        stream.getvalue()
    text = _outputs_text(tmp_path / "out" / "book" / "06_opt125m.ipynb")
    assert "06_opt125m | profile: custom" in text and f"model {standins[smoke.MODEL]}" in text
    assert "lr 2e-05, batch 8; 5-way beam search for 64 new tokens" in text
    chains = sorted((tmp_path / "runs").glob("opt-125m-wikitext-2-raw-v1-*"))
    assert len(chains) == 4  # setting 1, setting 2 and setting 1 under each repetition penalty
    for chain in chains:
        _check_opt125m_chain(chain)

def test_a_profile_that_does_not_assert_claims_records_a_failing_claim_and_carries_on(monkeypatch):
    from mcutils.results import ASSERT_CLAIMS_ENV, Claims

    claims = Claims("05_vae", "custom")
    with pytest.raises(AssertionError, match="claim does not hold"):
        claims.check("one is two", paper=2, ours=1, holds=False, kind="own")
    monkeypatch.setenv(ASSERT_CLAIMS_ENV, "0")
    record = claims.check("one is two", paper=2, ours=1, holds=False, kind="own")
    assert record.asserted and not record.holds and len(claims.records) == 2
    assert load_profile("paper-smoke", ROOT).assert_claims is False
    assert load_profile("paper", ROOT).assert_claims is True


def test_assert_claims_must_be_a_boolean(tmp_path):
    from mcutils.reproduce import ReproduceError

    (tmp_path / "bad.yaml").write_text("profile: bad\nassert_claims: 'no'\n")
    with pytest.raises(ReproduceError, match="assert_claims must be true or false"):
        load_profile(str(tmp_path / "bad.yaml"), ROOT)


def test_on_a_real_dataset_only_the_criteria_without_the_truth_are_judged():
    from mcutils.lm import fidelity

    # Generation-0 metrics as a chain on wikitext (or its stand-in) writes them: no synthetic truth.
    m0 = {"base_test_perplexity": 115.0, "test_perplexity": 34.0, "n_parameters": OPT125M_PARAMETERS,
          "samples": {"distinct_share": 0.95, "tail": {"word_survival": 0.4}}, "real_data": {}}
    measures = fidelity.generation0_measures(m0)
    assert fidelity.measurable(measures) == ["fine_tuning_gain", "distinct"]
    assert measures["gap_to_source"] is None and measures["topic_kept"] is None
    assert fidelity.verdicts(measures) == {"fine_tuning_gain": True, "distinct": True}
    synthetic = dict(m0, source_test_perplexity=30.0,
                     samples=dict(m0["samples"], topic_kept=0.5, off_grammar_share=0.1),
                     real_data={"off_grammar_share": 0.0})
    assert fidelity.verdicts(fidelity.generation0_measures(synthetic)) == \
        {"fine_tuning_gain": True, "gap_to_source": True, "topic_kept": False, "distinct": True}
