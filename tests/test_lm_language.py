"""The synthetic language: exact likelihood, stationarity, sampling, tokenizer (mcutils.lm.language)."""
import itertools

import numpy as np
import pytest

from mcutils.lm.language import N_SPECIAL, LanguageSpec, SyntheticLanguage, quantile_coupling
from mcutils.validate import ParameterError

SMALL = LanguageSpec(n_words=40, n_topics=3, topic_words=6, seed=3)


@pytest.fixture(scope="module")
def lang():
    return SyntheticLanguage(SMALL)


def test_quantile_coupling_has_both_marginals_and_is_sparse():
    rng = np.random.default_rng(0)
    mass = rng.dirichlet(np.ones(30))
    joint = quantile_coupling(mass, rng)
    np.testing.assert_allclose(joint.sum(axis=1), mass, atol=1e-12)
    np.testing.assert_allclose(joint.sum(axis=0), mass, atol=1e-12)
    assert (joint > 0).sum() <= 2 * len(mass) - 1


def test_every_topic_matrix_is_stochastic_with_its_stationary_law(lang):
    for z in range(SMALL.n_topics):
        p = lang.transition(z)
        assert p.min() > 0  # the back-off: no transition is impossible
        np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-12)
        np.testing.assert_allclose(lang.stationary[z] @ p, lang.stationary[z], atol=1e-12)
    # the shared grammar keeps the Zipf-Mandelbrot law stationary by construction
    np.testing.assert_allclose(lang.unigram @ lang.grammar, lang.unigram, atol=1e-12)


def test_block_likelihood_matches_brute_force_topic_mixture(lang):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, SMALL.n_words, size=(4, 5))
    got = lang.block_log_likelihood(rows + N_SPECIAL)
    for row, value in zip(rows, got):
        prior = lang.stationary[:, row[0]] / lang.stationary[:, row[0]].sum()
        total = sum(prior[z] * np.prod([lang.transition(z)[a, b] for a, b in itertools.pairwise(row)])
                    for z in range(SMALL.n_topics))
        assert value == pytest.approx(np.log(total), rel=1e-12)
    perplexity = lang.sequence_perplexity(rows + N_SPECIAL)
    np.testing.assert_allclose(perplexity, np.exp(-got / 4))


def test_special_tokens_have_zero_probability(lang):
    assert lang.block_log_likelihood(np.array([[N_SPECIAL, 2, N_SPECIAL + 1]]))[0] == -np.inf


def test_samples_follow_the_source(lang):
    ids = lang.sample_ids(400, 200, seed=0)
    freq = np.bincount(ids.ravel(), minlength=SMALL.n_words) / ids.size
    np.testing.assert_allclose(freq, lang.word_frequencies, atol=0.01)
    # same seed, same text; another seed, other text
    np.testing.assert_array_equal(ids, lang.sample_ids(400, 200, seed=0))
    assert not np.array_equal(ids, lang.sample_ids(400, 200, seed=1))
    # the source's own text is likelier under it than text of the related (pre-training) language
    own = lang.block_log_likelihood(ids[:, :20] + N_SPECIAL)
    related = lang.block_log_likelihood(lang.sample_ids(400, 20, seed=0, pretraining=True) + N_SPECIAL)
    assert np.isfinite(own).all() and np.isfinite(related).all()
    assert own.mean() > related.mean() + 1.0


def test_pretraining_language_differs_but_keeps_the_words(lang):
    assert not np.allclose(lang.grammar, lang.pretraining_grammar)
    np.testing.assert_allclose(lang.unigram @ lang.pretraining_grammar, lang.unigram, atol=1e-12)
    same = SyntheticLanguage(SMALL)
    assert same.words == lang.words
    assert SyntheticLanguage(LanguageSpec(**{**SMALL.to_dict(), "seed": 4})).words != lang.words


def test_tokenizer_ids_are_ranks_and_vocab_sizes_match(lang):
    tok = lang.tokenizer()
    assert len(tok) == SMALL.n_words + N_SPECIAL
    text = " ".join(lang.words[k] for k in (0, 5, 39))
    assert tok(text)["input_ids"] == [N_SPECIAL, N_SPECIAL + 5, N_SPECIAL + 39]
    assert tok.decode([N_SPECIAL + 5, N_SPECIAL]) == f"{lang.words[5]} {lang.words[0]}"
    assert tok("zzzz-not-a-word")["input_ids"] == [tok.unk_token_id]


def test_bad_language_settings_fail_clearly():
    with pytest.raises(ParameterError, match="smoothing"):
        LanguageSpec(smoothing=0.0)
    with pytest.raises(ParameterError, match="topic_words"):
        LanguageSpec(n_words=20, topic_words=10)


def test_topic_posterior_is_bayes_rule_by_brute_force(lang):
    rng = np.random.default_rng(4)
    rows = rng.integers(0, SMALL.n_words, size=(3, 6))
    got = lang.topic_posterior(rows + N_SPECIAL)
    for row, posterior in zip(rows, got):
        joint = np.array([lang.stationary[z][row[0]]
                          * np.prod([lang.transition(z)[a, b] for a, b in zip(row[:-1], row[1:])])
                          for z in range(SMALL.n_topics)])
        np.testing.assert_allclose(posterior, joint / joint.sum(), rtol=1e-10)


def test_topic_of_recovers_the_topic_a_long_document_was_sampled_from():
    from mcutils.lm import language as lg
    big = SyntheticLanguage(LanguageSpec(seed=5))
    ids = big.sample_ids(32, 256, seed=9)
    drawn = np.random.default_rng([5, 9, lg.STREAM_TEXT]).permutation(np.arange(32) % big.spec.n_topics)
    assert np.mean(big.topic_of(ids + N_SPECIAL) == drawn) >= 0.95  # 256 words name the topic almost surely


def test_off_grammar_marks_exactly_the_transitions_only_the_back_off_makes(lang):
    z = 1
    pure = (1 - SMALL.smoothing) * ((1 - SMALL.topic_share) * lang.grammar
                                    + SMALL.topic_share * lang.topics[z][None, :])
    prev, nxt = np.nonzero(pure == 0)
    ok_prev, ok_next = np.nonzero(pure > 0)
    rows = np.stack([np.r_[prev[:3], ok_prev[:3]], np.r_[nxt[:3], ok_next[:3]]], axis=1) + N_SPECIAL
    marked = lang.off_grammar(rows, np.full(len(rows), z))
    assert marked[:, 0].tolist() == [True] * 3 + [False] * 3


def test_real_text_has_few_back_off_transitions_beam_like_text_none():
    big = SyntheticLanguage(LanguageSpec(seed=2))
    blocks = big.sample_ids(16, 256, seed=3).reshape(-1, 64) + N_SPECIAL
    share = big.off_grammar(blocks, big.topic_of(blocks)).mean()
    assert 0 < share < big.spec.smoothing  # the back-off fires at rate ε, sometimes on a grammatical word
