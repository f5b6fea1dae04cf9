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
PINNED = {
    "quick()": (settings.quick, {},
                ("tiny-synthetic-replace-e5-s0-e76f399797", "721df3205d", "b1b2887490")),
    "paper()": (settings.paper, {},
                ("opt-125m-wikitext-replace-e5-s0-24a6c98922", "93339114a1", "a4b36a9237")),
    "smoke()": (settings.smoke, {},
                ("tiny-synthetic-replace-e2-s0-41d0ab7c4f", "282d92ce61", "3ef600bc67")),
    "quick(seed=1)": (settings.quick, dict(seed=1),
                      ("tiny-synthetic-replace-e5-s1-5c7aa6ccb5", "48c5db6348", "eb8b7e517b")),
    "quick(real_fraction=0.1, epochs=10)": (
        settings.quick, dict(real_fraction=0.1, epochs=10),
        ("tiny-synthetic-replace0.1-e10-s0-89e55c4273", "413cafe2ac", "28c8db5e2a")),
    "paper(repetition_penalty=2.0)": (
        settings.paper, dict(repetition_penalty=2.0),
        ("opt-125m-wikitext-replace-e5-rp2-s0-886096b060", "7737a8d02c", "a4512595a0")),
    "quick(policy='accumulate')": (
        settings.quick, dict(policy="accumulate"),
        ("tiny-synthetic-accumulate-e5-s0-f79be016ca", "036f0297bd", "b1b2887490")),
    "smoke(max_train_blocks=32, prompts='previous', precision='bf16')": (
        settings.smoke, dict(max_train_blocks=32, prompts="previous", precision="bf16"),
        ("tiny-synthetic-replace-e2-s0-da7446c476", "7f89100fd4", "c9329be00c")),
    "paper(dataset_config='wikitext-2-raw-v1', epochs=10)": (
        settings.paper, dict(dataset_config="wikitext-2-raw-v1", epochs=10),
        ("opt-125m-wikitext-replace-e10-s0-6ca2f63272", "abc71d4bd1", "613877ea9f")),
    "smoke(language=LanguageSpec(n_words=64, n_topics=4, topic_words=8, seed=3))": (
        settings.smoke, dict(language=LanguageSpec(n_words=64, n_topics=4, topic_words=8, seed=3)),
        ("tiny-synthetic-replace-e2-s0-b7f172a796", "fac027cc4f", "e304ae3bd0")),
}
FIELD_ORDER = ["model", "dataset", "dataset_config", "seed", "policy", "real_fraction", "epochs", "learning_rate",
               "min_learning_rate", "batch_size", "weight_decay", "precision", "block_size", "num_beams",
               "repetition_penalty", "prompts", "generation_batch_size", "eval_batch_size", "max_train_blocks",
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
    assert settings.ChainSettings.from_dict({"learning_rate": 1e-3, "batch_size": 32}) == settings.quick()


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
