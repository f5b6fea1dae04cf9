"""`python -m mcutils.lm`: clear errors before any long work (mcutils.lm.__main__ / settings)."""
import os
import subprocess
import sys

import pytest

from mcutils.lm import settings
from mcutils.lm.__main__ import main
from mcutils.validate import ParameterError


def _cli_in_fresh_python(args, **env):
    """Run main(args) in a new interpreter; report its exit code, stderr and whether torch got imported."""
    code = ("import sys; from mcutils.lm.__main__ import main; rc = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)")
    environment = {**os.environ, **env}
    for key, value in env.items():
        if value is None:
            environment.pop(key)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env=environment)
    return done.returncode, done.stderr, done.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "not a model!"], "unknown model 'not a model!'"),
    (["--dataset", "../no/such folder"], "unknown dataset"),
    (["--model", "tiny", "--dataset", "wikitext"], "model='tiny' knows only the synthetic language"),
    (["--real-fraction", "0.0001"], "keeps no block"),
    (["--batch-size", "100000"], "fewer than one batch"),
    (["--policy", "accumulate", "--real-fraction", "0.1"], "only applies to policy='replace'"),
    (["--n-generations", "-1"], "n_generations must be an integer >= 0"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
])
def test_bad_settings_fail_at_once_without_importing_torch(args, message):
    rc, stderr, stdout = _cli_in_fresh_python(args)
    assert rc == 2
    assert message in stderr
    assert "NO-TORCH" in stdout


def test_hub_model_offline_and_not_cached_says_the_quick_profile_works(tmp_path):
    rc, stderr, stdout = _cli_in_fresh_python(["--model", "facebook/opt-125m", "--dataset", "wikitext"],
                                              HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    assert rc == 2
    assert "not in the local Hugging Face cache" in stderr and "quick profile" in stderr
    assert "NO-TORCH" in stdout


def test_unreachable_hub_fails_fast_with_advice(tmp_path):
    """Hub online in principle but not answering: one connection attempt, then a clear error."""
    rc, stderr, stdout = _cli_in_fresh_python(
        ["--profile", "paper"], HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None,
        HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path))
    assert rc == 2
    assert "did not answer" in stderr and "quick profile" in stderr and "connect to the internet" in stderr
    assert "NO-TORCH" in stdout


def test_cuda_without_a_gpu_is_an_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc, stderr, _ = _cli_in_fresh_python(["--device", "cuda"])
    assert rc == 2 and "no CUDA GPU" in stderr


def test_settings_file_and_unknown_keys(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text('{"epochs": 3, "nonsense": 1}')
    assert main(["--settings", str(path)]) == 2
    assert "unknown settings ['nonsense']" in capsys.readouterr().err


def test_run_names_follow_the_settings():
    quick = settings.quick()
    assert quick.run_name.startswith("tiny-synthetic-replace-e5-s0-")
    assert settings.quick(seed=1).run_name != quick.run_name
    assert settings.quick(real_fraction=0.1, epochs=10).run_name.startswith("tiny-synthetic-replace0.1-e10-s0-")
    assert settings.paper(repetition_penalty=2.0).run_name.startswith("opt-125m-wikitext-replace-e5-rp2-s0-")
    # a chain's length and the device are not settings: a longer run continues a shorter one
    assert "n_generations" not in settings.SETTING_NAMES and "device" not in settings.SETTING_NAMES


def test_profiles():
    paper = settings.paper()
    assert (paper.model, paper.dataset, paper.learning_rate, paper.batch_size, paper.epochs) == \
        ("facebook/opt-125m", "wikitext", 2e-5, 128, 5)
    assert (paper.num_beams, paper.block_size, paper.repetition_penalty, paper.min_learning_rate) == (5, 64, 1.0, 1e-6)
    assert settings.quick().model == "tiny" and settings.quick().dataset == "synthetic"
    with pytest.raises(ParameterError, match="profile"):
        settings.for_profile("huge")


# -- the flags are generated from ChainSettings' fields (issue 11) -----------------------

def _settings_seen(monkeypatch, argv):
    from mcutils.lm import chain

    seen = {}

    def fake_run_chain(s, n, **kwargs):
        seen["settings"] = s
        raise ParameterError("stop here")

    monkeypatch.setattr(chain, "run_chain", fake_run_chain)
    assert main(argv) == 2
    return seen["settings"]


def test_every_flat_setting_has_a_flag_with_its_help():
    import dataclasses

    from mcutils.lm.__main__ import build_parser

    parser = build_parser()
    flags = {action.dest: action for action in parser._actions}
    for f in dataclasses.fields(settings.ChainSettings):
        if f.name in ("language", "corpus", "tiny"):
            assert f.name not in flags  # nested: set in a --settings file only
            continue
        action = flags[f.name]
        assert f"--{f.name.replace('_', '-')}" in action.option_strings
        assert action.default is None  # "not given": a --settings file's value is kept
        assert action.help.startswith(f.metadata["help"])
    assert list(flags["precision"].choices) == list(settings.PRECISIONS)
    assert list(flags["prompts"].choices) == list(settings.PROMPTS)
    assert "--settings file only" in parser.format_help()


def test_generated_flags_reach_the_settings(monkeypatch):
    s = _settings_seen(monkeypatch, ["--profile", "smoke", "--num-beams", "3", "--weight_decay", "0.1",
                                     "--min-learning-rate", "1e-5", "--max-train-blocks", "32"])
    assert s == settings.smoke(num_beams=3, weight_decay=0.1, min_learning_rate=1e-5, max_train_blocks=32)
    assert _settings_seen(monkeypatch, ["--profile", "smoke"]) == settings.smoke()


def test_a_nested_spec_from_a_settings_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "s.json"
    path.write_text('{"tiny": {"n_layers": 2}, "epochs": 3}')
    s = _settings_seen(monkeypatch, ["--profile", "smoke", "--settings", str(path), "--epochs", "4"])
    assert s.tiny == settings.TinyModelSpec(n_layers=2) and s.epochs == 4
    path.write_text('{"tiny": {"width": 3}}')
    assert main(["--settings", str(path)]) == 2
    assert f"--settings {path}: tiny: unknown settings ['width']" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--num-beams", "65"], "num_beams must be an integer <= 64, got 65"),
    (["--min-learning-rate", "1"], "min_learning_rate must be <= 0.003, got 1.0"),
    (["--block-size", "1"], "block_size must be an integer >= 2, got 1"),
])
def test_generated_flags_are_checked_against_the_field_bounds(args, message, capsys):
    assert main(["--profile", "smoke", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_flag_that_does_not_parse_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--precision", "fp8"])
    assert caught.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def _chapter_parameters(name="06_opt125m"):
    """The default parameters of a chapter (its cell tagged "parameters"), as Python values."""
    import ast
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "book" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.AnnAssign):
            out[node.target.id] = ast.literal_eval(node.value)
    return out


def test_no_flags_runs_the_opt125m_chapters_quick_setting_1_for_its_first_seed(monkeypatch):
    import torch

    from mcutils import lm
    from mcutils.lm import chain

    called = {}

    def fake_run_chain(st, n_generations, **kwargs):
        called.update(settings=st, n_generations=n_generations, threads=torch.get_num_threads(), **kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(chain, "run_chain", fake_run_chain)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit):
            main(["--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    p = _chapter_parameters()
    engine_profile, overrides = lm.chapter_settings(p["profile"], p["lm_profile"], p["lm_model"], p["lm_dataset"],
                                                    p["lm_train_tokens"])
    chapter = lm.for_profile(engine_profile, seed=p["seed"], policy="replace", epochs=p["epochs_setting1"],
                             **overrides)
    assert called["settings"].run_name == chapter.run_name
    assert called["n_generations"] == p["n_generations"]
    assert called["threads"] == p["cpu_threads"] == 1
    assert called["last_data"] is True  # every model's data, unless asked otherwise


def test_no_last_data_reaches_the_chain(monkeypatch):
    import torch

    from mcutils.lm import chain

    called = {}

    def fake_run_chain(st, n_generations, **kwargs):
        called.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(chain, "run_chain", fake_run_chain)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit):
            main(["--profile", "smoke", "--device", "cpu", "--no-last-data"])
    finally:
        torch.set_num_threads(threads)
    assert called["last_data"] is False
