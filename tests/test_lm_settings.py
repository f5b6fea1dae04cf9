"""ChainSettings declared once (mcutils.lm.settings): run names pinned, one validation loop, the hub module."""
import dataclasses
import json

import pytest

from mcutils import runs
from mcutils.lm import hub, settings
from mcutils.lm.language import LanguageSpec
from mcutils.validate import ParameterError

# (run name, hash of to_dict(), hash of generation0_settings()), computed by the code before the
# refactor that moved the bounds into field metadata (issue 11), then recomputed once when
# ENGINE_VERSION became 2 (seeds derived by SeedSequence: the same settings give other numbers, so
# the run names and generation-0 hashes changed; the settings hashes did not).  Chains and the
# book's numbers are stored under these names, so they must not change for the same settings.
# Issue 13 added the field beam_backend (left out of run names: both backends give the same tokens), so
# every settings hash changed once while the run names of unchanged settings did not, and gave quick()
# the checked stand-in (new run names); small() is the old quick stand-in with 256 training blocks, whose
# run names are those the accumulate chapter's chains had before.
PINNED = {
    "quick()": (settings.quick, {},
                ("tiny-synthetic-replace-e5-s0-97cb014020", "f4eb3e63d4", "5302be7337")),
    "paper()": (settings.paper, {},
                ("opt-125m-wikitext-replace-e5-s0-24a6c98922", "2f99f30d29", "a4b36a9237")),
    "smoke()": (settings.smoke, {},
                ("tiny-synthetic-replace-e2-s0-41d0ab7c4f", "c425de80bf", "3ef600bc67")),
    "quick(seed=1)": (settings.quick, dict(seed=1),
                      ("tiny-synthetic-replace-e5-s1-7161d795fc", "5c9323338c", "1384c95086")),
    "quick(real_fraction=0.1, epochs=10)": (
        settings.quick, dict(real_fraction=0.1, epochs=10),
        ("tiny-synthetic-replace0.1-e10-s0-06109be857", "2a2555d04b", "0974ece967")),
    "paper(repetition_penalty=2.0)": (
        settings.paper, dict(repetition_penalty=2.0),
        ("opt-125m-wikitext-replace-e5-rp2-s0-886096b060", "72c60abe9a", "a4512595a0")),
    "quick(policy='accumulate')": (
        settings.quick, dict(policy="accumulate"),
        ("tiny-synthetic-accumulate-e5-s0-2c0c2b59f9", "1d8edb9ea6", "5302be7337")),
    "smoke(max_train_blocks=32, prompts='previous', precision='bf16')": (
        settings.smoke, dict(max_train_blocks=32, prompts="previous", precision="bf16"),
        ("tiny-synthetic-replace-e2-s0-da7446c476", "b13ccceb21", "c9329be00c")),
    "paper(dataset_config='wikitext-2-raw-v1', epochs=10)": (
        settings.paper, dict(dataset_config="wikitext-2-raw-v1", epochs=10),
        ("opt-125m-wikitext-replace-e10-s0-6ca2f63272", "543e940a05", "613877ea9f")),
    "smoke(language=LanguageSpec(n_words=64, n_topics=4, topic_words=8, seed=3))": (
        settings.smoke, dict(language=LanguageSpec(n_words=64, n_topics=4, topic_words=8, seed=3)),
        ("tiny-synthetic-replace-e2-s0-b7f172a796", "2906d58d6f", "e304ae3bd0")),
    "small()": (settings.small, {},
                ("tiny-synthetic-replace-e5-s0-d2ccf39017", "f29ecda4da", "97e3fa5cc3")),
    "small(policy='accumulate')": (settings.small, dict(policy="accumulate"),
                ("tiny-synthetic-accumulate-e5-s0-6cb0587498", "cc7edf963e", "97e3fa5cc3")),
}
FIELD_ORDER = ["model", "dataset", "dataset_config", "seed", "policy", "real_fraction", "epochs", "learning_rate",
               "min_learning_rate", "batch_size", "weight_decay", "precision", "block_size", "num_beams",
               "repetition_penalty", "beam_backend", "prompts", "generation_batch_size", "eval_batch_size", "max_train_blocks",
               "rare_max_count", "language", "corpus", "tiny"]


@pytest.mark.parametrize("case", list(PINNED))
def test_run_names_and_settings_hashes_are_those_of_before(case):
    make, overrides, (name, settings_hash, generation0_hash) = PINNED[case]
    s = make(**overrides)
    assert s.run_name == name
    assert runs.settings_hash(s.to_dict()) == settings_hash
    assert runs.settings_hash(s.generation0_settings()) == generation0_hash
    assert s.run_name == runs.run_name(name.rsplit("-", 1)[0], s.result_settings())


def test_to_dict_keeps_its_fields_and_round_trips():
    s = settings.smoke(seed=3, max_train_blocks=40)
    assert list(s.to_dict()) == FIELD_ORDER
    assert settings.ChainSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert settings.ChainSettings.from_dict({}) == settings.ChainSettings()
    assert settings.ChainSettings.from_dict(
        {"learning_rate": 1e-3, "batch_size": 32, "corpus": {"train_tokens": 16384}}) == settings.small()


def test_every_setting_declares_its_help():
    for cls in (settings.ChainSettings, settings.TinyModelSpec, settings.SyntheticCorpusSpec, LanguageSpec):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            assert settings.describe(cls, f).startswith(f.metadata["help"])
    precision = {f.name: f for f in dataclasses.fields(settings.ChainSettings)}["precision"]
    assert precision.metadata["choices"] == settings.PRECISIONS
    assert "one of fp32, bf16, fp16" in settings.describe(settings.ChainSettings, precision)


@pytest.mark.parametrize("overrides, message", [
    (dict(seed=settings.MAX_SEED + 1), "seed must be an integer <= 4294967295, got 4294967296"),
    (dict(seed=True), "seed must be an integer, got True (bool)"),
    (dict(model=""), "model must be a non-empty string, got ''"),
    (dict(model="not a model!"), "unknown model 'not a model!': not one of ['tiny']"),
    (dict(dataset_config=3), "dataset_config must be a dataset configuration name or None, got 3"),
    (dict(policy="nope"), "policy must be one of ['replace', 'accumulate', 'accumulate-subsample'], got 'nope'"),
    (dict(real_fraction=1.5), "real_fraction must be <= 1.0, got 1.5"),
    (dict(learning_rate=0), "learning_rate must be > 0.0, got 0"),
    (dict(min_learning_rate=1), "min_learning_rate must be <= 0.001, got 1"),
    (dict(precision="fp8"), "precision must be one of ['fp32', 'bf16', 'fp16'], got 'fp8'"),
    (dict(block_size=5000), "block_size must be an integer <= 4096, got 5000"),
    (dict(max_train_blocks=0), "max_train_blocks must be an integer >= 1, got 0"),
    (dict(language=3), "language must be a LanguageSpec, got 3"),
    (dict(tiny=None), "tiny must be a TinyModelSpec, got None"),
    (dict(tiny={"hidden_size": 66}), "hidden_size=66 must be a multiple of n_heads=4"),
    (dict(corpus={"test_tokens": 1.0}), "test_tokens must be an integer, got 1.0 (float)"),
    (dict(max_train_blocks=3), "the synthetic training split has 3 blocks of 64 tokens, fewer than one batch"),
])
def test_the_validation_loop_keeps_the_messages(overrides, message):
    """The messages of before the loop (nested specs given as dicts are built by from_dict)."""
    with pytest.raises(ParameterError) as caught:
        if any(isinstance(value, dict) for value in overrides.values()):
            settings.ChainSettings.from_dict({"learning_rate": 1e-3, "batch_size": 32, **overrides})
        else:
            settings.quick(**overrides)
    assert message in str(caught.value)


def test_from_dict_names_unknown_and_malformed_keys():
    with pytest.raises(ParameterError, match=r"unknown settings \['nonsense'\]"):
        settings.ChainSettings.from_dict({"nonsense": 1})
    with pytest.raises(ParameterError, match=r"tiny: unknown settings \['width'\]"):
        settings.ChainSettings.from_dict({"tiny": {"width": 3}})
    with pytest.raises(ParameterError, match="corpus must be an object"):
        settings.ChainSettings.from_dict({"corpus": 3})
    with pytest.raises(ParameterError, match="language: n_words must be an integer"):
        settings.ChainSettings.from_dict({"language": {"n_words": 2}})


def test_the_hub_checks_moved_but_stay_importable_from_settings():
    for name in ("HubUnavailable", "hub_offline", "hub_endpoint", "hub_reachable", "needs_hub", "check_hub",
                 "QUICK_WORKS_OFFLINE", "offline_advice", "go_offline", "_hf_home", "_maybe_cached"):
        assert getattr(settings, name) is getattr(hub, name)
    assert issubclass(hub.HubUnavailable, ParameterError)
    assert hub.needs_hub(settings.quick()) == [] and hub.check_hub(settings.quick()) == "local"
    assert hub.needs_hub(settings.paper()) == [("model", "facebook/opt-125m"), ("dataset", "wikitext")]


def test_the_quick_profile_is_the_stand_in_the_recorded_tries_chose():
    """benchmarks/standin.py names the try that met every generation-0 criterion; quick() is that try."""
    import json
    from pathlib import Path

    from benchmarks import standin
    from mcutils.lm import fidelity

    chosen = settings.quick()
    tried = standin.settings_of({"beam_backend": chosen.beam_backend, **standin.TRIES[standin.CHOSEN]})
    assert tried == chosen
    record = json.loads((Path(standin.HERE) / f"{standin.CHOSEN}.json").read_text())
    assert record["overrides"] == standin.TRIES[standin.CHOSEN]
    assert fidelity.verdicts(record["generation0"]) == record["criteria_met"]
    assert all(record["criteria_met"].values())
