"""Beam generation, scoring and the data policies of the LM chain (mcutils.lm.generate / metrics / chain)."""
import numpy as np
import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from mcutils.generational import Policy
from mcutils.lm import generate, metrics
from mcutils.lm.chain import REAL_SOURCE, mix_training_data
from mcutils.validate import ParameterError


@pytest.fixture(scope="module")
def tiny_opt():
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=50, hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=2,
                       num_attention_heads=2, ffn_dim=32, max_position_embeddings=32, dropout=0.0,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2)
    return OPTForCausalLM(config).eval()


@pytest.fixture(scope="module")
def prompts():
    return np.random.default_rng(0).integers(4, 50, size=(7, 8))


def test_beam_continuations_equal_hugging_face_generate(tiny_opt, prompts):
    """Batched (3 + 3 + 1) continuations are the new tokens of one `generate` call on all prompts."""
    ours = generate.beam_continuations(tiny_opt, prompts, new_tokens=10, num_beams=5, batch_size=3,
                                       progress=False)
    ids = torch.as_tensor(prompts)
    with torch.no_grad():
        theirs = tiny_opt.generate(ids, attention_mask=torch.ones_like(ids), num_beams=5, do_sample=False,
                                   min_new_tokens=10, max_new_tokens=10)
    assert ours.shape == (7, 10)
    np.testing.assert_array_equal(ours, theirs[:, 8:].numpy())
    # the end-of-text id is barred until the 10th token: every continuation is a full block
    assert not np.any(ours == tiny_opt.config.eos_token_id)


def test_repetition_penalty_reaches_the_search(tiny_opt, prompts):
    plain = generate.beam_continuations(tiny_opt, prompts, new_tokens=12, batch_size=7, progress=False)
    penalised = generate.beam_continuations(tiny_opt, prompts, new_tokens=12, batch_size=7,
                                            repetition_penalty=3.0, progress=False)
    ids = torch.as_tensor(prompts)
    with torch.no_grad():
        theirs = tiny_opt.generate(ids, attention_mask=torch.ones_like(ids), num_beams=5, do_sample=False,
                                   min_new_tokens=12, max_new_tokens=12, repetition_penalty=3.0)
    np.testing.assert_array_equal(penalised, theirs[:, 8:].numpy())
    assert not np.array_equal(plain, penalised)


def test_prompt_plus_continuation_must_fit_the_positions(tiny_opt, prompts):
    with pytest.raises(ParameterError, match="max_position_embeddings=32"):
        generate.beam_continuations(tiny_opt, np.tile(prompts, 3), new_tokens=16, progress=False)


def test_token_losses_match_the_models_own_loss(tiny_opt, prompts):
    losses = metrics.token_losses(tiny_opt, prompts, batch_size=2)
    ids = torch.as_tensor(prompts)
    with torch.no_grad():
        expected = tiny_opt(input_ids=ids, labels=ids).loss.item()
    assert losses.shape == (7, 7)
    assert losses.mean() == pytest.approx(expected, rel=1e-6)
    assert metrics.perplexity(metrics.sequence_losses(tiny_opt, prompts)) == pytest.approx(np.exp(expected), rel=1e-6)


def test_perplexity_by_true_probability_splits_tokens():
    losses = np.log([[2.0, 8.0], [2.0, 8.0]])
    true = np.log([[0.5, 0.001], [0.3, 0.002]])
    out = metrics.perplexity_by_true_probability(losses, true, threshold=0.01)
    assert out["rare"] == pytest.approx(8.0) and out["common"] == pytest.approx(2.0)
    assert out["rare_token_share"] == 0.5


def test_tail_survival_counts_rare_words_and_transitions():
    real = np.array([[1, 2, 3, 1], [1, 2, 4, 5]])  # words 3, 4, 5 once; word 1 three times
    ref = metrics.TailReference(real, rare_max_count=1)
    assert set(ref.rare_words) == {3, 4, 5}
    kept = ref.survival(np.array([[1, 2, 3, 9]]))
    assert kept["rare_word_survival"] == pytest.approx(1 / 3)
    assert kept["word_survival"] == pytest.approx(3 / 5)
    # transitions (1,2) twice; (2,3), (3,1), (2,4), (4,5) once each: (2,3) survives, (3,9) is new
    assert kept["rare_transition_survival"] == pytest.approx(1 / 4)
    assert kept["unseen_transition_share"] == pytest.approx(1 / 3)


def test_repeated_ngram_share():
    assert metrics.repeated_ngram_share(np.array([[1, 2, 3, 4, 5, 6]]), n=2) == 0.0
    looped = np.array([[1, 2, 1, 2, 1, 2]])  # bigrams 12 21 12 21 12: three repeats of five
    assert metrics.repeated_ngram_share(looped, n=2) == pytest.approx(3 / 5)


# -- the data policies -----------------------------------------------------------------

N = 40


def _history(generation):
    real = np.arange(N)[:, None] * np.ones((1, 3), dtype=int)
    generated = [1000 * (g + 1) + real for g in range(generation)]
    return real, generated


@pytest.mark.parametrize("generation", [1, 3])
def test_replace_trains_on_the_newest_samples_only(generation):
    real, generated = _history(generation)
    blocks, source = mix_training_data(Policy("replace"), 0, generation, real, generated)
    np.testing.assert_array_equal(blocks, generated[-1])
    assert set(source) == {generation - 1}


def test_replace_keeping_real_data_mixes_a_fresh_random_tenth():
    real, generated = _history(3)
    policy = Policy("replace", 0.1)
    blocks, source = mix_training_data(policy, 0, 3, real, generated)
    assert len(blocks) == N and np.sum(source == REAL_SOURCE) == 4 and np.sum(source == 2) == 36
    assert np.all(blocks[source == REAL_SOURCE] < 1000)          # real blocks are real
    assert np.all(blocks[source == 2] // 1000 == 3)              # the rest from generation 2
    kept = {tuple(b) for b in blocks[source == REAL_SOURCE]}
    _, generated4 = _history(4)
    blocks4, source4 = mix_training_data(policy, 0, 4, real, generated4)
    assert kept != {tuple(b) for b in blocks4[source4 == REAL_SOURCE]}  # a fresh subset each generation
    again, _ = mix_training_data(policy, 0, 3, real, generated)
    np.testing.assert_array_equal(blocks, again)                 # but the same on a rerun


def test_accumulate_keeps_everything():
    real, generated = _history(3)
    blocks, source = mix_training_data(Policy("accumulate"), 0, 3, real, generated)
    assert len(blocks) == 4 * N
    assert {int(s): int(c) for s, c in zip(*np.unique(source, return_counts=True))} == {-1: N, 0: N, 1: N, 2: N}


def test_accumulate_subsample_draws_a_fixed_size_from_the_pool():
    real, generated = _history(3)
    blocks, source = mix_training_data(Policy("accumulate-subsample"), 0, 3, real, generated)
    assert len(blocks) == N and len(np.unique(blocks, axis=0)) == N  # without replacement
    assert len(set(source)) >= 3                                     # from several generations
    # provenance matches the content of each block
    expected_source = np.where(blocks[:, 0] < 1000, REAL_SOURCE, blocks[:, 0] // 1000 - 1)
    np.testing.assert_array_equal(source, expected_source)


def test_generation_zero_is_the_real_data():
    real, _ = _history(0)
    blocks, source = mix_training_data(Policy("accumulate"), 0, 0, real, [])
    np.testing.assert_array_equal(blocks, real)
    assert set(source) == {REAL_SOURCE}


def test_the_process_helpers_are_no_ops_under_one_process():
    from mcutils.lm import chain, dist

    assert dist.rank_and_world() == (0, 1) and dist.is_main() and dist.agree(True) and not dist.agree(False)
    assert dist.my_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    array = np.arange(6.0)
    assert dist.sum_across(array) is array
    dist.barrier()
    # seeds come from named SeedSequence streams: any seed numpy takes gives an int seed below 2**32
    seeds = {chain.training_seed(seed, g) for seed in (0, 2**32 - 1) for g in (0, 1, 999)}
    assert len(seeds) == 6 and all(0 <= s < 2**32 for s in seeds)


def test_pretraining_uses_the_cores_whatever_the_chapters_thread_count(monkeypatch):
    from mcutils.lm import model as lm_model, settings

    monkeypatch.delenv("MCUTILS_PRETRAIN_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lm_model.tiny_key(settings.quick())
        torch.set_num_threads(2)
        two = lm_model.tiny_key(settings.quick())
    finally:
        torch.set_num_threads(before)
    assert one == two  # a chapter at 1 thread and one at 2 find the same cached stand-in
    assert one["arithmetic"]["threads"] == lm_model.pretraining_threads()
    monkeypatch.setenv("MCUTILS_PRETRAIN_THREADS", "3")
    assert lm_model.pretraining_threads() == 3
    assert lm_model.tiny_key(settings.quick())["arithmetic"]["threads"] == 3


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_pretraining_thread_count_is_refused_naming_the_variable(monkeypatch, value):
    from mcutils.lm import model as lm_model

    monkeypatch.setenv("MCUTILS_PRETRAIN_THREADS", value)
    with pytest.raises(ParameterError, match="MCUTILS_PRETRAIN_THREADS must be a positive integer"):
        lm_model.pretraining_threads()
