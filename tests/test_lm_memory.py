"""The memory formulas of mcutils.lm.memory against peaks measured on the CPU, and the batch-size choice.

The measurements use :func:`mcutils.lm.memory.cpu_peak_bytes` (torch.profiler's
per-op memory events) on small OPT configurations without dropout (on the
CPU, attention with dropout leaves the fused kernel and keeps the T x T
probabilities, which a GPU's kernels do not).  Tolerance: the formula within
10% of the measured peak.
"""
import subprocess
import sys

import pytest
import torch

from mcutils import validate
from mcutils.lm import memory

TOLERANCE = 0.10
SHAPES = {"ffn-heavy": (500, 128, 3, 4, 512), "wide": (300, 256, 2, 8, 1024)}


def small_config(vocab, hidden, layers, heads, ffn, dropout=0.0):
    from transformers import OPTConfig

    return OPTConfig(vocab_size=vocab, hidden_size=hidden, word_embed_proj_dim=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, ffn_dim=ffn, max_position_embeddings=256, dropout=dropout,
                     pad_token_id=1, bos_token_id=2, eos_token_id=2)


def test_parameter_formula_equals_the_models_own_count_for_opt_125m_and_a_projected_opt():
    from transformers import OPTConfig, OPTForCausalLM

    projected = OPTConfig(vocab_size=1000, hidden_size=64, word_embed_proj_dim=32, num_hidden_layers=2,
                          num_attention_heads=4, ffn_dim=128, max_position_embeddings=100)
    for config in (memory.opt_125m_config(), projected):
        with torch.device("meta"):
            model = OPTForCausalLM(config)
        assert memory.n_parameters(config) == sum(p.numel() for p in model.parameters())
    assert memory.n_parameters(memory.opt_125m_config()) == 125_239_296


def test_opt_125m_configuration_is_the_hubs():
    shape = memory.shape_of(memory.opt_125m_config())
    assert (shape.hidden_size, shape.n_layers, shape.n_heads, shape.ffn_dim, shape.vocab_size,
            shape.max_positions) == (768, 12, 12, 3072, 50272, 2048)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_training_peak_formula_is_within_10_percent_of_the_peak_measured_on_the_cpu(shape):
    from transformers import OPTForCausalLM

    torch.manual_seed(0)
    config = small_config(*shape)
    model = OPTForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)  # foreach: the GPU default
    batch, seq_len = 8, 64
    ids = torch.randint(3, config.vocab_size, (batch, seq_len))

    def loss():  # as Trainer: the model's outputs are dropped before the backward pass
        return model(input_ids=ids, labels=ids).loss

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # AdamW creates its moments in the first step: measure a steady one
    _, extra = memory.cpu_peak_bytes(step)
    n = sum(p.numel() for p in model.parameters())
    measured = 4 * n + 8 * n + extra  # weights and moments were alive before the measured step
    predicted = memory.training_peak_bytes(config, batch, seq_len, "fp32")
    assert abs(predicted / measured - 1) <= TOLERANCE, (predicted, measured)


@pytest.mark.parametrize("backend", ["hf", "static"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_generation_peak_formula_is_within_10_percent_of_the_peak_measured_on_the_cpu(shape, backend):
    from transformers import OPTForCausalLM

    from mcutils.lm.beam import beam_search
    from mcutils.lm.generate import generation_config

    torch.manual_seed(0)
    config = small_config(*shape)
    model = OPTForCausalLM(config).eval()
    batch, beams, prompt, new = 16, 5, 32, 32
    ids = torch.randint(3, config.vocab_size, (batch, prompt))
    if backend == "hf":
        settings = generation_config(model, new, beams, 2.0)
        run = lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),  # noqa: E731
                                     generation_config=settings)
    else:
        run = lambda: beam_search(model, ids, new_tokens=new, num_beams=beams, repetition_penalty=2.0)  # noqa: E731
    with torch.no_grad():
        _, extra = memory.cpu_peak_bytes(run)
    measured = 4 * sum(p.numel() for p in model.parameters()) + extra
    # On the CPU the fixed-shape search double-buffers its cache (mcutils.lm.beam.beam_search).
    predicted = memory.generation_peak_bytes(config, batch, beams, prompt, new, "fp32", backend,
                                             double_buffered=backend == "static")
    assert abs(predicted / measured - 1) <= TOLERANCE, (predicted, measured)


def test_half_precision_autocast_needs_less_activation_memory_but_keeps_fp32_master_weights():
    config = memory.opt_125m_config()
    fp32 = memory.training_breakdown(config, 128, 64, "fp32")
    half = memory.training_breakdown(config, 128, 64, "fp16")
    assert half["activations"] < fp32["activations"]
    assert half["weights"] == fp32["weights"] == 4 * memory.n_parameters(config)
    assert half["autocast_weights"] > 0 == fp32["autocast_weights"]


def test_a_card_too_small_for_the_global_batch_splits_it_into_micro_batches_that_fit():
    config = memory.opt_125m_config()
    gpu = 6 * memory.GIB
    plan = memory.choose_batch_sizes(config, gpu, "fp32")
    usable = memory.usable_bytes(gpu)
    assert plan.train_batch_size * plan.gradient_accumulation_steps == 128
    assert plan.gradient_accumulation_steps > 1
    assert plan.training_peak_bytes <= usable
    larger = plan.train_batch_size * 2  # the next divisor of 128 does not fit
    assert memory.training_peak_bytes(config, larger, 64, "fp32", accumulating=larger < 128) > usable
    assert 1 <= plan.generation_batch_size < 128
    assert memory.generation_peak_bytes(config, plan.generation_batch_size, 5, 64, 64) <= usable
    assert memory.generation_peak_bytes(config, plan.generation_batch_size + 1, 5, 64, 64) > usable


def test_a_large_card_runs_the_global_batch_at_once():
    plan = memory.choose_batch_sizes(memory.opt_125m_config(), 80 * memory.GIB, "bf16")
    assert (plan.train_batch_size, plan.gradient_accumulation_steps, plan.generation_batch_size) == (128, 1, 128)


def test_a_card_smaller_than_one_sequence_is_refused_naming_the_memory():
    with pytest.raises(validate.ParameterError, match="gpu_memory_bytes=.*not even one training sequence"):
        memory.choose_batch_sizes(memory.opt_125m_config(), 2 * memory.GIB, "fp32")


@pytest.mark.parametrize("call, message", [
    (lambda c: memory.training_peak_bytes(c, 8, 64, "fp64"), r"precision must be one of \['fp32', 'bf16', 'fp16'\]"),
    (lambda c: memory.training_peak_bytes(c, 0, 64), "batch_size must be an integer >= 1"),
    (lambda c: memory.generation_peak_bytes(c, 8, backend="vllm"), r"backend must be one of \['hf', 'static'\]"),
    (lambda c: memory.shape_of(object()), "config must be an OPTConfig"),
    (lambda c: memory.usable_bytes(10 * memory.GIB, memory_fraction=1.5), "memory_fraction must be <= 1.0"),
])
def test_bad_arguments_raise_parameter_errors_naming_them(call, message):
    with pytest.raises(validate.ParameterError, match=message):
        call(memory.opt_125m_config())


def test_the_table_command_prints_a_markdown_table_of_the_three_cards():
    out = subprocess.run([sys.executable, "-m", "mcutils.lm.memory", "--table"], capture_output=True, text=True,
                         check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2 * len(memory.GPUS)  # header, rule, fp32 and half precision per card
    assert all(row.count("|") == rows[0].count("|") for row in rows)
    for name, _, half in memory.GPUS:
        assert sum(name in row for row in rows) == 2
    assert "fp16 autocast" in out and "bf16 autocast" in out
    assert out == memory.table() + "\n"


def test_the_running_page_shows_the_tables_current_output():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "book" / "running.md").read_text()
    assert "python -m mcutils.lm.memory --table" in page
    assert memory.table() in page, "book/running.md's table is stale: paste `python -m mcutils.lm.memory --table`"
