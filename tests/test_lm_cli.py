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
    (["--n-generations", "0"], "n_generations must be an integer >= 1"),
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
