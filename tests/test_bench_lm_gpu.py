"""benchmarks/bench_lm_gpu.py runs at its CPU size and reports what the GPU run will report."""
import pytest

from benchmarks import bench_lm_gpu
from mcutils import validate


@pytest.fixture(scope="module")
def result():
    # Two generation batches of 32: beam_continuations' batching is exercised too.
    return bench_lm_gpu.main(device="cpu", generation_blocks=64, generation_batch=32, repeats=1)


def test_the_gpu_benchmark_runs_on_the_cpu_and_reports_every_measurement(result):
    expected = {"device", "model", "n_parameters", "corpus_blocks", "train_fp32_tokens_per_s",
                "train_fp32_peak_bytes", "train_fp32_peak_predicted_bytes",
                "generate_hf_fp32_new_tokens_per_s", "generate_static_fp32_new_tokens_per_s",
                "generate_hf_fp32_peak_bytes", "generate_static_fp32_peak_predicted_bytes",
                "identical", "identical_fp32", "static_over_hf_speedup_fp32", "official_fp32", "fast",
                "fast_training_precision", "summary"}
    assert expected <= set(result)
    assert result["device"] == "cpu" and result["corpus_blocks"] == 512
    for key in ("train_fp32_tokens_per_s", "generate_hf_fp32_new_tokens_per_s",
                "generate_static_fp32_new_tokens_per_s", "static_over_hf_speedup_fp32"):
        assert result[key] > 0
    for projection in (result["official_fp32"], result["fast"]):
        assert set(projection) == {"epoch_s", "generate_all_blocks_s", "generation_s", "fig1_hours"}
        assert projection["generation_s"]["setting 2"] > projection["generation_s"]["setting 1"]
        assert projection["fig1_hours"] > 0


def test_the_fixed_shape_search_gave_hf_generates_tokens_in_the_benchmark(result):
    assert result["identical"] is True


def test_fig1_projection_is_five_seeds_of_ten_models_in_both_settings():
    out = bench_lm_gpu.project(train_tokens_per_s=64.0, generation_tokens_per_s=32.0, n_blocks=10)
    # An epoch of 10 blocks of 64 tokens at 64 tokens/s: 10 s; generating them at 32 new tokens/s: 20 s.
    assert out["epoch_s"] == 10.0 and out["generate_all_blocks_s"] == 20.0
    assert out["generation_s"] == {"setting 1": 70.0, "setting 2": 120.0}
    assert out["fig1_hours"] == round(5 * 10 * (70 + 120) / 3600, 2)


def test_an_unknown_device_is_refused_naming_the_parameter():
    with pytest.raises(validate.ParameterError, match="device must be one of"):
        bench_lm_gpu.main(device="tpu")
