"""The fixed-shape beam search of mcutils.lm.beam against Hugging Face's `generate`, token for token.

Every comparison calls ``model.generate`` with the engine's own
``generation_config`` (5 beams unless said, min = max new tokens,
length_penalty 1.0) on randomly initialised tiny models in fp32.
"""
import numpy as np
import pytest
import torch

from mcutils import validate
from mcutils.lm import dist, generate
from mcutils.lm.beam import beam_search

VOCAB = 300
PROMPT = 10
NEW = 12


def tiny_opt(init_std: float = 0.02, seed: int = 0):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=VOCAB, hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=2,
                       num_attention_heads=4, ffn_dim=64, max_position_embeddings=64, dropout=0.0,
                       init_std=init_std, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    return OPTForCausalLM(config).eval()


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def hf_new_tokens(model, ids, new_tokens=NEW, num_beams=5, repetition_penalty=1.0):
    config = generate.generation_config(model, new_tokens, num_beams, repetition_penalty)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    assert out.shape == (ids.shape[0], ids.shape[1] + new_tokens)  # generate gave a full block too
    return out[:, ids.shape[1]:]


def prompts(batch, seed=0, length=PROMPT):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)


@pytest.fixture(scope="module")
def opt():
    return tiny_opt()


@pytest.mark.parametrize("repetition_penalty", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fixed_shape_beam_search_equals_hf_generate_token_for_token(opt, repetition_penalty, batch):
    ids = prompts(batch, seed=batch)
    expected = hf_new_tokens(opt, ids, repetition_penalty=repetition_penalty)
    got = beam_search(opt, ids, new_tokens=NEW, num_beams=5, repetition_penalty=repetition_penalty)
    assert got.dtype == torch.long and got.shape == (batch, NEW)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("num_beams", [1, 2, 7])
def test_other_numbers_of_beams_equal_hf_generate_too(opt, num_beams):
    ids = prompts(4, seed=10 + num_beams)
    expected = hf_new_tokens(opt, ids, num_beams=num_beams, repetition_penalty=2.0)
    assert torch.equal(beam_search(opt, ids, new_tokens=NEW, num_beams=num_beams, repetition_penalty=2.0),
                       expected)


@pytest.mark.parametrize("double_buffered", [True, False], ids=["double-buffered", "one-buffer"])
@pytest.mark.parametrize("repetition_penalty", [1.0, 3.0])
def test_a_peaked_model_whose_beams_diverge_gives_hf_generates_tokens(repetition_penalty, double_buffered):
    # init_std 1.0 makes the next-token distributions sharp, so beams swap places and
    # the winner is not the greedy path: the reordering of the cache is exercised.
    model = tiny_opt(init_std=1.0, seed=3)
    ids = prompts(6, seed=5)
    expected = hf_new_tokens(model, ids, repetition_penalty=repetition_penalty)
    greedy = hf_new_tokens(model, ids, num_beams=1, repetition_penalty=repetition_penalty)
    assert not torch.equal(expected, greedy)  # beam search chose another path than greedy somewhere
    assert torch.equal(beam_search(model, ids, new_tokens=NEW, repetition_penalty=repetition_penalty,
                                   double_buffered=double_buffered), expected)


def test_end_of_text_is_barred_until_the_last_token_as_in_hf_generate():
    model = tiny_opt(seed=4)
    with torch.no_grad():  # make end-of-text (id 2) the most likely next token everywhere
        model.lm_head.weight[2] *= 40.0
    ids = prompts(4, seed=6)
    expected = hf_new_tokens(model, ids)
    got = beam_search(model, ids, new_tokens=NEW)
    assert not bool((got == 2).any())
    assert torch.equal(got, expected)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_gpt2_and_llama_from_config_give_hf_generates_tokens(build):
    model = build()
    ids = prompts(3, seed=7)
    for penalty in (1.0, 2.0):
        assert torch.equal(beam_search(model, ids, new_tokens=NEW, repetition_penalty=penalty),
                           hf_new_tokens(model, ids, repetition_penalty=penalty))


@pytest.mark.parametrize("double_buffered", [True, False], ids=["double-buffered", "one-buffer"])
def test_sharing_the_prompts_prefill_across_beams_changes_no_token(opt, double_buffered):
    ids = prompts(5, seed=8)
    shared = beam_search(opt, ids, new_tokens=NEW, repetition_penalty=2.0, shared_prefill=True,
                         double_buffered=double_buffered)
    per_beam = beam_search(opt, ids, new_tokens=NEW, repetition_penalty=2.0, shared_prefill=False,
                           double_buffered=double_buffered)
    assert torch.equal(shared, per_beam)


def test_a_double_buffered_cache_reads_its_second_buffer_after_a_reorder():
    # Not a no-op in disguise: after one reorder the model reads the other buffer, whose prompt
    # positions the shared prefill wrote too.
    from mcutils.lm.beam import _cache_classes

    cache = _cache_classes()(1, 4, 6, True)
    prompt = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)
    cache.layers[0].update(prompt, prompt + 100)
    step = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 1, 2).contiguous()
    cache.layers[0].update(step, step)
    first = cache.layers[0].keys
    cache.reorder_rows(torch.tensor([1, 1, 3, 2]))
    layer = cache.layers[0]
    assert layer.keys.data_ptr() != first.data_ptr()
    assert torch.equal(layer.keys[:, :, :3], prompt.repeat_interleave(2, dim=0))
    assert torch.equal(layer.keys[:, 0, 3, 0], torch.tensor([1.0, 1.0, 3.0, 2.0]))


def test_one_new_token_is_the_best_first_token(opt):
    ids = prompts(4, seed=9)
    got = beam_search(opt, ids, new_tokens=1)
    with torch.no_grad():
        logits = opt(input_ids=ids).logits[:, -1, :]
    logits[:, 2] = -float("inf")  # end-of-text barred
    assert torch.equal(got[:, 0], logits.argmax(dim=-1))
    assert torch.equal(got, hf_new_tokens(opt, ids, new_tokens=1))


def test_static_backend_of_beam_continuations_equals_the_hf_backend(opt):
    blocks = prompts(10, seed=11).numpy()
    with dist.single_process():
        hf = generate.beam_continuations(opt, blocks, new_tokens=NEW, batch_size=4, progress=False,
                                         repetition_penalty=3.0)
        static = generate.beam_continuations(opt, blocks, new_tokens=NEW, batch_size=4, progress=False,
                                             repetition_penalty=3.0, backend="static")
    assert static.dtype == np.int64 and static.shape == (10, NEW)
    np.testing.assert_array_equal(static, hf)


def test_an_unknown_backend_is_refused_naming_the_parameter(opt):
    with pytest.raises(validate.ParameterError, match=r"backend must be one of \['hf', 'static'\]"):
        generate.beam_continuations(opt, prompts(2).numpy(), new_tokens=4, backend="vllm", progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(new_tokens=0), "new_tokens must be an integer >= 1"),
    (dict(new_tokens=4, num_beams=0), "num_beams must be an integer >= 1"),
    (dict(new_tokens=4, repetition_penalty=0.0), "repetition_penalty must be > 0"),
    (dict(new_tokens=4, double_buffered="yes"), "double_buffered must be True or False"),
])
def test_bad_search_parameters_raise_parameter_errors_naming_them(opt, kwargs, message):
    with pytest.raises(validate.ParameterError, match=message):
        beam_search(opt, prompts(2), **kwargs)


def test_a_one_dimensional_prompt_is_refused(opt):
    with pytest.raises(validate.ParameterError, match="input_ids must be a 2-D tensor"):
        beam_search(opt, prompts(1)[0], new_tokens=4)


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside-a-second-process"])
def test_the_double_buffering_benchmark_times_both_caches_and_finds_the_same_tokens(opt, beside):
    from benchmarks.bench_lm import measure_double_buffering

    out = measure_double_buffering(opt, prompts(2, seed=11, length=8), repeats=1, new_tokens=NEW, beside=beside)
    assert out["double_buffering_identical"] is True
    assert set(out) == {"beam_double_buffered_s", "beam_one_buffer_s", "double_buffering_speedup",
                        "double_buffering_identical"}
    assert out["double_buffering_speedup"] > 0
