"""A synthetic language whose exact likelihood is known, and its word-level tokenizer.

The paper fine-tunes OPT-125m on wikitext-2 (Shumailov et al., §4) and can
only *estimate* how far generated text drifts from human text, by scoring it
with the generation-0 model (Fig. 1, left).  The quick profile replaces
wikitext-2 by a source that mcutils builds from a seed, so the truth is known.

Words.  ``n_words`` word types with a Zipf-Mandelbrot law
``u_k ∝ (k + 1 + q)^(-s)`` (Mandelbrot's fit to word frequencies; the offset
``q`` flattens the head so that no single word dominates).

Grammar.  A first-order Markov matrix ``S`` that keeps ``u`` stationary: each
of ``n_couplings`` joint laws of (word, next word) has both marginals equal to
``u`` (the *quantile coupling* of two random orderings of the vocabulary: lay
the words' masses end to end in each order and pair the overlapping
stretches), so ``S = Σ_j w_j W_j / u`` satisfies ``u S = u``.  A frequent word
is followed by many words, a rare word by one or two.

Topics.  Every document has one of ``n_topics`` topics, each with its own
``topic_words`` content words (a Zipf law ``v_z`` over them).  Inside a
document of topic ``z``::

    P_z(w | v) = (1 - ε)·[(1 - β)·S[v, w] + β·v_z[w]] + ε·u[w]

with ``β = topic_share`` and ``ε = smoothing``.  Topics make the text depend
on more than the last word (a model has to infer the topic from the context,
and beam search continues a prompt on its topic instead of falling into one
global loop); the back-off ``ε·u`` gives every transition a positive
probability, so every sequence has a finite exact likelihood, and makes the
long tail of rare transitions that collapse removes first.  Documents start
in their topic's stationary law ``π_z``, so every position of a document is
stationary and the exact likelihood of a block given its first word is::

    P(x_1 … x_{L-1} | x_0) = Σ_z P(z | x_0) · Π_t P_z(x_t | x_{t-1}),  P(z | x_0) ∝ π_z(x_0)

A second, *related* language plays the role of the web text OPT was
pre-trained on: the same words and topics, but a share ``domain_shift`` of the
grammar comes from other couplings, ``S_pre = (1 - λ)·S + λ·S'``.  The tiny
model is pre-trained on it, so generation 0 starts from a model that knows
the vocabulary and part of the grammar but still has to be fine-tuned on the
target, as OPT-125m has to be on wikitext-2 (zero-shot 115 → 34 perplexity in
the paper).

Word ids: the tokenizer puts OPT's special tokens first (``<s>`` 0, ``<pad>``
1, ``</s>`` 2, ``<unk>`` 3, as in OPT's own vocabulary), then the words in
rank order, so token id ``4 + k`` is the word of rank ``k``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np

from .. import validate

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
N_SPECIAL = len(SPECIAL_TOKENS)
_CONSONANTS = "ptkbdgmnlrsvfzh"
_VOWELS = "aeiou"
_N_FUNCTION_WORDS = 16  # the most frequent words belong to no topic



# Seed streams: every draw is ``numpy.random.default_rng([language seed, STREAM])`` (the book's one
# convention); a text sample adds its own id, ``[language seed, sample, STREAM_TEXT]``.
STREAM_WORDS = 0x1A9            # the pseudo-words' spellings
STREAM_GRAMMAR = 0x2B7          # the target language's grammar
STREAM_OTHER_GRAMMAR = 0x3C5    # the related grammar mixed into the pre-training language
STREAM_TOPICS = 0x4D1           # the topics' word sets
STREAM_TEXT = 0x5E3             # a text sample of the target language
STREAM_PRETRAINING_TEXT = 0x5E4  # a text sample of the related (pre-training) language

@dataclass(frozen=True)
class LanguageSpec:
    """The settings that define a synthetic language (all of them go into run names)."""

    # Help texts only: the bounds are checked in __post_init__ (see the module docstring for the symbols).
    n_words: int = field(default=512, metadata={"help": "word types of the vocabulary"})
    zipf_exponent: float = field(default=1.0, metadata={"help": "s of the Zipf-Mandelbrot law of the words"})
    zipf_offset: float = field(default=2.7, metadata={
        "help": "q of the Zipf-Mandelbrot law (flattens its head)"})
    n_couplings: int = field(default=2, metadata={"help": "quantile couplings mixed into the grammar S"})
    n_topics: int = field(default=16, metadata={"help": "topics (one a document)"})
    topic_words: int = field(default=32, metadata={"help": "content words of each topic"})
    topic_share: float = field(default=0.3, metadata={"help": "beta: the share of a topic's own words"})
    smoothing: float = field(default=0.05, metadata={
        "help": "epsilon: the back-off to the word law that gives every transition a positive probability"})
    domain_shift: float = field(default=0.5, metadata={
        "help": "lambda: the share of other couplings in the related language the tiny model is pre-trained on"})
    seed: int = field(default=0, metadata={"help": "seeds the language and the tiny model's pre-training"})

    def __post_init__(self):
        validate.integer("n_words", self.n_words, minimum=_N_FUNCTION_WORDS + 2, maximum=4096)
        validate.number("zipf_exponent", self.zipf_exponent, minimum=0.0, maximum=4.0)
        validate.number("zipf_offset", self.zipf_offset, minimum=0.0, maximum=1000.0)
        validate.integer("n_couplings", self.n_couplings, minimum=1, maximum=64)
        validate.integer("n_topics", self.n_topics, minimum=1, maximum=256)
        validate.integer("topic_words", self.topic_words, minimum=1,
                         maximum=self.n_words - _N_FUNCTION_WORDS)
        validate.fraction("topic_share", self.topic_share)
        validate.number("smoothing", self.smoothing, minimum=0.0, maximum=1.0, strict_minimum=True)
        validate.fraction("domain_shift", self.domain_shift)
        validate.non_negative_int("language seed", self.seed)

    def to_dict(self) -> dict:
        return asdict(self)


def _pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct pronounceable words; frequent (low-rank) words are shorter."""
    words: list[str] = []
    seen: set[str] = set()
    consonants, vowels = list(_CONSONANTS), list(_VOWELS)
    for rank in range(n):
        n_syllables = 1 + int(np.log1p(rank) / np.log(12))  # ranks 0-10: one syllable
        while True:
            word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(n_syllables))
            if word not in seen:
                break
            n_syllables += int(rng.random() < 0.2)  # crowded length: sometimes go longer
        seen.add(word)
        words.append(word)
    return words


def quantile_coupling(mass: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sparse joint law with both marginals ``mass``: two random orders, overlaps paired.

    Lay the masses end to end on [0, 1] once in one random order and once in
    another; the mass of the pair (v, w) is the overlap of v's stretch in the
    first layout with w's stretch in the second.  At most ``2n - 1`` pairs.
    """
    n = len(mass)
    first, second = rng.permutation(n), rng.permutation(n)
    edges_first = np.concatenate([[0.0], np.cumsum(mass[first])])
    edges_second = np.concatenate([[0.0], np.cumsum(mass[second])])
    edges_first[-1] = edges_second[-1] = 1.0
    # Every cut point of either layout starts a new stretch of the merged layout.
    cuts = np.unique(np.concatenate([edges_first, edges_second]))
    mid = (cuts[:-1] + cuts[1:]) / 2
    rows = first[np.searchsorted(edges_first, mid, side="right") - 1]
    cols = second[np.searchsorted(edges_second, mid, side="right") - 1]
    joint = np.zeros((n, n))
    np.add.at(joint, (rows, cols), np.diff(cuts))
    return joint


class SyntheticLanguage:
    """The topic-Markov source: exact log-likelihoods, samples, text and a tokenizer."""

    def __init__(self, spec: LanguageSpec | None = None, **overrides):
        self.spec = spec if spec is not None else LanguageSpec(**overrides)
        s = self.spec
        weights = (np.arange(1, s.n_words + 1) + s.zipf_offset) ** -s.zipf_exponent
        self.unigram = weights / weights.sum()
        self.words = _pseudo_words(s.n_words, np.random.default_rng([s.seed, STREAM_WORDS]))
        grammar = self._grammar(np.random.default_rng([s.seed, STREAM_GRAMMAR]))
        other = self._grammar(np.random.default_rng([s.seed, STREAM_OTHER_GRAMMAR]))
        self.grammar = grammar
        self.pretraining_grammar = (1 - s.domain_shift) * grammar + s.domain_shift * other
        self.topics = self._topics(np.random.default_rng([s.seed, STREAM_TOPICS]))

    # -- construction -------------------------------------------------------------
    def _grammar(self, rng: np.random.Generator) -> np.ndarray:
        """``S``: a weighted mixture of quantile couplings, divided by ``u`` row-wise."""
        weights = 1.0 / np.arange(1, self.spec.n_couplings + 1)  # a dominant habit, then others
        weights /= weights.sum()
        joint = sum(w * quantile_coupling(self.unigram, rng) for w in weights)
        grammar = joint / self.unigram[:, None]
        return grammar / grammar.sum(axis=1, keepdims=True)  # exact up to rounding already

    def _topics(self, rng: np.random.Generator) -> np.ndarray:
        """``(n_topics, n_words)``: each topic's law ``v_z`` over its content words."""
        s = self.spec
        content = np.arange(_N_FUNCTION_WORDS, s.n_words)
        p = self.unigram[content] / self.unigram[content].sum()
        zipf = 1.0 / np.arange(1, s.topic_words + 1)
        out = np.zeros((s.n_topics, s.n_words))
        for z in range(s.n_topics):
            chosen = rng.choice(content, size=s.topic_words, replace=False, p=p)
            out[z, chosen] = zipf / zipf.sum()
        return out

    def transition(self, topic: int, pretraining: bool = False) -> np.ndarray:
        """The dense matrix ``P_z`` of one topic (rows: previous word, columns: next word)."""
        s = self.spec
        grammar = self.pretraining_grammar if pretraining else self.grammar
        return ((1 - s.smoothing) * ((1 - s.topic_share) * grammar + s.topic_share * self.topics[topic][None, :])
                + s.smoothing * self.unigram[None, :])

    def _stationary_of(self, pretraining: bool) -> np.ndarray:
        out = np.empty((self.spec.n_topics, self.spec.n_words))
        for z in range(self.spec.n_topics):
            matrix, pi = self.transition(z, pretraining), self.unigram.copy()
            for _ in range(10_000):
                nxt = pi @ matrix
                done = np.abs(nxt - pi).sum() < 1e-14
                pi = nxt
                if done:
                    break
            out[z] = pi / pi.sum()
        return out

    @cached_property
    def stationary(self) -> np.ndarray:
        """``(n_topics, n_words)``: each topic's stationary law ``π_z`` (where its documents start)."""
        return self._stationary_of(False)

    @cached_property
    def pretraining_stationary(self) -> np.ndarray:
        return self._stationary_of(True)

    @property
    def word_frequencies(self) -> np.ndarray:
        """The long-run share of every word over documents of all topics."""
        return self.stationary.mean(axis=0)

    @cached_property
    def entropy_rate(self) -> float:
        """Nats per token once the topic is known (the limit for long contexts)."""
        total = 0.0
        for z in range(self.spec.n_topics):
            p = self.transition(z)
            total += float(-np.sum(self.stationary[z][:, None] * p * np.log(p)))
        return total / self.spec.n_topics

    @property
    def true_perplexity(self) -> float:
        """``exp(entropy rate)``: no model's test perplexity can be lower on long blocks."""
        return float(np.exp(self.entropy_rate))

    # -- sampling -------------------------------------------------------------------
    def sample_ids(self, n_documents: int, length: int, seed: int, pretraining: bool = False) -> np.ndarray:
        """``n_documents`` documents of ``length`` words (ranks, not token ids); topics cycle.

        Each step backs off to ``u`` with probability ``ε``, else draws a topic
        word with probability ``β``, else follows the grammar: exactly ``P_z``.
        """
        validate.positive_int("n_documents", n_documents)
        validate.positive_int("length", length)
        s = self.spec
        rng = np.random.default_rng([s.seed, seed, STREAM_PRETRAINING_TEXT if pretraining else STREAM_TEXT])
        grammar = self.pretraining_grammar if pretraining else self.grammar
        stationary = self.pretraining_stationary if pretraining else self.stationary
        # Every row sums to 1, so one running sum puts row v's cumulative weights in (v, v + 1].
        rows, cols = np.nonzero(grammar)
        keys = np.cumsum(grammar[rows, cols])
        row_ends = np.r_[np.flatnonzero(np.diff(rows)), len(rows) - 1]
        keys[row_ends] = rows[row_ends] + 1.0  # exact row boundaries despite rounding
        topic = rng.permutation(np.arange(n_documents) % s.n_topics)  # balanced topics
        unigram_cdf = np.cumsum(self.unigram)
        topic_cdf = np.cumsum(self.topics, axis=1)
        start_cdf = np.cumsum(stationary, axis=1)

        def draw(cdf_rows, u):  # row-wise inverse CDF
            return np.minimum((cdf_rows <= u[:, None]).sum(axis=1), s.n_words - 1)

        out = np.empty((n_documents, length), dtype=np.int64)
        out[:, 0] = draw(start_cdf[topic], rng.random(n_documents))
        topic_words = [np.flatnonzero(row) for row in self.topics]
        for t in range(1, length):
            kind, u = rng.random(n_documents), rng.random(n_documents)
            follow = cols[np.minimum(np.searchsorted(keys, out[:, t - 1] + u, side="right"), len(cols) - 1)]
            backoff = np.minimum(np.searchsorted(unigram_cdf, u, side="right"), s.n_words - 1)
            topical = np.empty(n_documents, dtype=np.int64)
            for z in range(s.n_topics):  # a topic's cdf is flat outside its words: search only those
                mine = topic == z
                cdf = topic_cdf[z, topic_words[z]]
                topical[mine] = topic_words[z][np.minimum(np.searchsorted(cdf, u[mine], side="right"),
                                                          len(cdf) - 1)]
            out[:, t] = np.where(kind < s.smoothing, backoff,
                                 np.where(kind < s.smoothing + (1 - s.smoothing) * s.topic_share, topical, follow))
        return out

    def sample_text(self, n_tokens: int, seed: int, words_per_line: int = 32, document_length: int = 1024,
                    pretraining: bool = False) -> list[str]:
        """About ``n_tokens`` words as lines of text; a document every ``document_length`` words.

        Keep ``document_length`` a multiple of the block size so that no
        block straddles two documents (the exact block likelihood assumes one topic).
        """
        validate.positive_int("n_tokens", n_tokens)
        n_documents = -(-n_tokens // document_length)
        ids = self.sample_ids(n_documents, document_length, seed, pretraining).reshape(-1)[:n_tokens]
        words = np.asarray(self.words)[ids]
        return [" ".join(words[i:i + words_per_line]) for i in range(0, len(words), words_per_line)]

    # -- exact likelihood -------------------------------------------------------------
    def token_log_probs(self, token_ids: np.ndarray) -> np.ndarray:
        """``log P(x_t | x_0 … x_{t-1})`` for ``t = 1 … L-1`` of every row: shape ``(n, L - 1)``.

        The topic is unknown: its posterior given the block so far is updated
        token by token (exact Bayes over the ``n_topics`` topics, prior
        ``P(z | x_0) ∝ π_z(x_0)``).  The row sums are the blocks' exact
        log-likelihoods.  A row holding a token that is not a word (a special
        token) has probability 0 under the source: ``-inf`` throughout.
        """
        ids = np.asarray(token_ids, dtype=np.int64)
        ids = (ids[None, :] if ids.ndim == 1 else ids) - N_SPECIAL
        valid = np.all((ids >= 0) & (ids < self.spec.n_words), axis=1)
        ids = np.where(valid[:, None], ids, 0)
        s = self.spec
        prev, nxt = ids[:, :-1], ids[:, 1:]
        shared = (1 - s.smoothing) * (1 - s.topic_share) * self.grammar[prev, nxt] + s.smoothing * self.unigram[nxt]
        log_step = np.log(shared[:, :, None] + (1 - s.smoothing) * s.topic_share
                          * self.topics.T[nxt])                           # (B, L-1, T)
        log_post = np.log(self.stationary[:, ids[:, 0]].T)               # (B, T)
        log_post -= np.logaddexp.reduce(log_post, axis=1, keepdims=True)
        out = np.empty(prev.shape)
        for t in range(prev.shape[1]):
            joint = log_post + log_step[:, t]
            out[:, t] = np.logaddexp.reduce(joint, axis=1)
            log_post = joint - out[:, t, None]
        out[~valid] = -np.inf
        return out

    def _word_ids(self, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(word ranks, valid rows)`` of a 2-D array of token ids (a row with a special token is invalid)."""
        ids = np.asarray(token_ids, dtype=np.int64)
        ids = (ids[None, :] if ids.ndim == 1 else ids) - N_SPECIAL
        valid = np.all((ids >= 0) & (ids < self.spec.n_words), axis=1)
        return np.where(valid[:, None], ids, 0), valid

    def topic_posterior(self, token_ids: np.ndarray) -> np.ndarray:
        """``P(z | x_0 … x_{L-1})`` of every row, shape ``(n, n_topics)``: exact Bayes over the topics.

        ``log P(z | x) = log π_z(x_0) + Σ_t log P_z(x_t | x_{t-1}) - log P(x)``; a row holding a
        special token gets the uniform posterior (it has no likelihood under any topic).
        """
        ids, valid = self._word_ids(token_ids)
        s = self.spec
        prev, nxt = ids[:, :-1], ids[:, 1:]
        shared = (1 - s.smoothing) * (1 - s.topic_share) * self.grammar[prev, nxt] + s.smoothing * self.unigram[nxt]
        log_post = np.log(self.stationary[:, ids[:, 0]].T)
        log_post += np.log(shared[:, :, None] + (1 - s.smoothing) * s.topic_share * self.topics.T[nxt]).sum(axis=1)
        log_post -= np.logaddexp.reduce(log_post, axis=1, keepdims=True)
        out = np.exp(log_post)
        out[~valid] = 1.0 / s.n_topics
        return out

    def topic_of(self, token_ids: np.ndarray) -> np.ndarray:
        """The most probable topic of every row (the argmax of :meth:`topic_posterior`)."""
        return self.topic_posterior(token_ids).argmax(axis=1)

    def off_grammar(self, token_ids: np.ndarray, topics: np.ndarray) -> np.ndarray:
        """Which transitions of every row only the back-off ``ε·u`` makes, given each row's topic.

        A transition ``v → w`` inside a document of topic ``z`` is *grammatical* when the grammar
        has it (``S[v, w] > 0``) or ``w`` is one of ``z``'s words (``v_z[w] > 0``); every other one
        has only the probability ``ε·u[w]`` the back-off gives it.  Real text holds a few (the source
        makes them at that small rate); a model that invents transitions writes more.  Shape
        ``(n, L - 1)``; a row with a special token counts as off-grammar throughout.
        """
        ids, valid = self._word_ids(token_ids)
        topics = np.asarray(topics, dtype=np.int64).reshape(-1)
        prev, nxt = ids[:, :-1], ids[:, 1:]
        grammatical = (self.grammar[prev, nxt] > 0) | (self.topics[topics[:, None], nxt] > 0)
        out = ~grammatical
        out[~valid] = True
        return out

    def block_log_likelihood(self, token_ids: np.ndarray) -> np.ndarray:
        """``log P(x_1 … x_{L-1} | x_0)`` of every row of token ids (see the module docstring)."""
        return self.token_log_probs(token_ids).sum(axis=1)

    def sequence_perplexity(self, token_ids: np.ndarray) -> np.ndarray:
        """The source's per-token perplexity of every row: ``exp(-log P(x_1… | x_0) / (L - 1))``."""
        ids = np.asarray(token_ids)
        length = ids.shape[-1] - 1
        return np.exp(-self.block_log_likelihood(ids) / length)

    # -- tokenizer ------------------------------------------------------------------
    @property
    def vocabulary(self) -> dict[str, int]:
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        vocab.update({w: N_SPECIAL + k for k, w in enumerate(self.words)})
        return vocab

    def tokenizer(self):
        """A word-level ``PreTrainedTokenizerFast`` whose ids are ``4 + rank`` (see module doc)."""
        return word_level_tokenizer(self.vocabulary)


def word_level_tokenizer(vocab: dict[str, int]):
    """Whitespace word-level tokenizer (``tokenizers``) wrapped for ``transformers``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # OPT's conventions: "</s>" opens and closes text, "<pad>" pads.
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="</s>", pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>")
