"""The paper profile's code runs end to end on a CPU, offline, before anyone pays for a GPU (issue #16).

``profiles/paper-smoke.yaml`` is the paper profile with smaller sizes and the
hub's OPT-125m, wikitext-2 and MNIST replaced by the local stand-ins of
:mod:`mcutils.smoke`.  The stand-ins are checked for the shapes the paper
profile relies on; then the batch runner executes 05 and 06 under that
profile, and the executed notebooks must show the paper profile's code paths:
28×28 images read through ``load_dataset``, the engine's paper settings on a
model of 125,239,296 parameters (OPT-125m's count), 5-way beam search by
Hugging Face ``generate``.  Cost on 2 shared cores: about 20 s to build the
stand-ins, then the two chapters (see ``book/running.md`` for the measured time).
"""
from __future__ import annotations

import io
import json
import os
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
    sources = {"dataset", "lm_model", "lm_dataset", "lm_profile"}
    sizes = {"n_generations", "n_runs", "n_seeds", "epochs", "epochs_setting1", "epochs_setting2", "sample_sizes",
             "snapshot_generations", "accumulate_generations", "official_runs", "official_generations",
             "lm_train_tokens", "subsample_runs", "gaussian_runs", "lm_generations", "n_grid"}
    assert set(paper) <= set(profile.chapters)
    for chapter, params in paper.items():
        for name, value in (params or {}).items():
            if name not in sources | sizes:
                assert profile.chapters[chapter][name] == value, (chapter, name)


@pytest.mark.slow
def test_chapters_05_and_06_run_the_paper_profiles_code_on_the_stand_ins(standins, tmp_path):
    stream = io.StringIO()
    outcomes, _ = reproduce.run("paper-smoke", chapters="05_vae,06_opt125m", output_dir=str(tmp_path / "out"),
                                build=False, params={"runs_dir": str(tmp_path / "runs")}, stream=stream)
    by_name = {o.chapter: o for o in outcomes}
    assert by_name["05_vae"].status == "ok" and by_name["06_opt125m"].status == "ok", stream.getvalue()

    def text_of(chapter):
        nb = json.loads((tmp_path / "out" / "book" / f"{chapter}.ipynb").read_text())
        return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                       for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))

    vae_text = text_of("05_vae")
    assert "05_vae | profile: custom" in vae_text and "1500 images of 28x28 pixels" in vae_text
    lm_text = text_of("06_opt125m")
    assert "06_opt125m | profile: custom" in lm_text
    assert "model " + str(standins[smoke.MODEL]) in lm_text and "lr 2e-05" in lm_text
    assert "5-way beam search for 64 new tokens" in lm_text
    chains = sorted((tmp_path / "runs").glob("opt-125m-wikitext-2-raw-v1-*"))
    assert chains, "no chain of the OPT-125m stand-in on wikitext's stand-in was written"
    settings = json.loads((chains[0] / "settings.json").read_text())
    assert settings["beam_backend"] == "hf" and settings["num_beams"] == 5 and settings["block_size"] == 64
    gen0 = json.loads((chains[0] / "gen_00" / "metrics.json").read_text())
    assert gen0["n_parameters"] == OPT125M_PARAMETERS


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
