"""A synthetic language whose exact likelihood is known, and its word-level tokenizer.

The paper fine-tunes OPT-125m on wikitext-2 (Shumailov et al., §4) and can
only *estimate* how far generated text drifts from human text, by scoring it
with the generation-0 model (Fig. 1, left).  The quick profile replaces
wikitext-2 by a source that mcutils builds from a seed, so the truth is known:

* ``n_words`` word types with a Zipf law ``u_k ∝ (k + 1)^(-s)``;
* a first-order Markov chain over them that keeps ``u`` as its stationary
  law exactly: each of ``n_couplings`` joint laws ``W_j`` of (word, next
  word) has both marginals equal to ``u`` (the quantile coupling of two
  random orderings of the vocabulary: lay the words' masses end to end in
  each order and pair the overlapping stretches), so ``S = Σ_j w_j W_j / u``
  is a transition matrix with ``u S = u``.  A frequent word is followed by
  many words, a rare word by one or two (per coupling);
* a back-off share ``smoothing`` spread over the whole vocabulary by ``u``:
  ``P(w | v) = (1 - ε)·S[v, w] + ε·u[w]`` is never zero, so every sequence
  has a finite exact likelihood, and the back-off produces the long tail of
  rare transitions that collapse removes first.

A second, *related* language plays the role of the web text OPT was
pre-trained on: a share ``domain_shift`` of its grammar ``S`` comes from
other couplings, ``S_pre = (1 - λ)·S + λ·S'`` (same words, same Zipf law).
The tiny model is pre-trained on it, so generation 0 starts from a model that
knows the vocabulary and part of the grammar but still has to be fine-tuned
on the target, as OPT-125m has to be on wikitext-2 (zero-shot 115 → 34
perplexity in the paper).

Word ids: the tokenizer puts OPT's special tokens first (``<s>`` 0, ``<pad>``
1, ``</s>`` 2, ``<unk>`` 3, as in OPT's own vocabulary), then the words in
rank order, so token id ``4 + k`` is the word of rank ``k``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from .. import validate

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
N_SPECIAL = len(SPECIAL_TOKENS)
_CONSONANTS = "ptkbdgmnlrsvfzh"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class LanguageSpec:
    """The settings that define a synthetic language (all of them go into run names)."""

    n_words: int = 1024
    zipf_exponent: float = 1.1
    n_couplings: int = 3
    smoothing: float = 0.05
    domain_shift: float = 0.5
    seed: int = 0

    def __post_init__(self):
        validate.integer("n_words", self.n_words, minimum=8, maximum=8192)
        validate.number("zipf_exponent", self.zipf_exponent, minimum=0.0, maximum=4.0)
        validate.integer("n_couplings", self.n_couplings, minimum=1, maximum=64)
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
    """The Markov source: exact log-likelihoods, samples, text and a tokenizer."""

    def __init__(self, spec: LanguageSpec | None = None, **overrides):
        self.spec = spec if spec is not None else LanguageSpec(**overrides)
        s = self.spec
        ranks = np.arange(1, s.n_words + 1, dtype=float)
        self.unigram = ranks ** -s.zipf_exponent / np.sum(ranks ** -s.zipf_exponent)
        self.words = _pseudo_words(s.n_words, np.random.default_rng([s.seed, 0x1A9]))
        grammar = self._grammar(np.random.default_rng([s.seed, 0x2B7]))
        other = self._grammar(np.random.default_rng([s.seed, 0x3C5]))
        self.grammar = grammar
        self.pretraining_grammar = (1 - s.domain_shift) * grammar + s.domain_shift * other
        self.transition = self._smooth(self.grammar)
        self.pretraining_transition = self._smooth(self.pretraining_grammar)

    def _grammar(self, rng: np.random.Generator) -> np.ndarray:
        """``S``: a weighted mixture of quantile couplings, divided by ``u`` row-wise."""
        weights = 1.0 / np.arange(1, self.spec.n_couplings + 1)  # a dominant habit, then others
        weights /= weights.sum()
        joint = sum(w * quantile_coupling(self.unigram, rng) for w in weights)
        return joint / self.unigram[:, None]

    def _smooth(self, grammar: np.ndarray) -> np.ndarray:
        eps = self.spec.smoothing
        matrix = (1 - eps) * grammar + eps * self.unigram[None, :]
        return matrix / matrix.sum(axis=1, keepdims=True)  # exact up to rounding already

    @property
    def stationary(self) -> np.ndarray:
        """The chain's stationary law: the Zipf law ``u`` by construction."""
        return self.unigram

    @cached_property
    def entropy_rate(self) -> float:
        """Nats per token of the source in its stationary regime."""
        p = self.transition
        return float(-np.sum(self.unigram[:, None] * p * np.log(p)))

    @property
    def true_perplexity(self) -> float:
        """``exp(entropy rate)``: the best test perplexity any model can reach."""
        return float(np.exp(self.entropy_rate))

    # -- sampling -----------------------------------------------------------
    def sample_ids(self, n_documents: int, length: int, seed: int, pretraining: bool = False) -> np.ndarray:
        """``n_documents`` independent chains of ``length`` words (word ranks, not token ids).

        Each step backs off to ``u`` with probability ``ε`` and otherwise
        follows the grammar ``S``, which is the mixture ``P`` exactly.
        """
        validate.positive_int("n_documents", n_documents)
        validate.positive_int("length", length)
        rng = np.random.default_rng([self.spec.seed, seed, 0x4D1 + int(pretraining)])
        grammar = self.pretraining_grammar if pretraining else self.grammar
        # Every row sums to 1, so one running sum puts row v's cumulative weights in (v, v + 1].
        rows, cols = np.nonzero(grammar)
        keys = np.cumsum(grammar[rows, cols])
        row_ends = np.r_[np.flatnonzero(np.diff(rows)), len(rows) - 1]
        keys[row_ends] = rows[row_ends] + 1.0  # exact row boundaries despite rounding
        unigram_cdf = np.cumsum(self.unigram)
        out = np.empty((n_documents, length), dtype=np.int64)
        out[:, 0] = np.minimum(np.searchsorted(unigram_cdf, rng.random(n_documents), side="right"),
                               self.spec.n_words - 1)
        for t in range(1, length):
            prev = out[:, t - 1]
            backoff = rng.random(n_documents) < self.spec.smoothing
            u = rng.random(n_documents)
            follow = cols[np.minimum(np.searchsorted(keys, prev + u, side="right"), len(cols) - 1)]
            draw = np.minimum(np.searchsorted(unigram_cdf, u, side="right"), self.spec.n_words - 1)
            out[:, t] = np.where(backoff, draw, follow)
        return out

    def sample_text(self, n_tokens: int, seed: int, words_per_line: int = 32,
                    document_length: int = 1024, pretraining: bool = False) -> list[str]:
        """About ``n_tokens`` words as lines of text, each document a separate chain."""
        validate.positive_int("n_tokens", n_tokens)
        n_documents = -(-n_tokens // document_length)
        ids = self.sample_ids(n_documents, document_length, seed, pretraining).reshape(-1)[:n_tokens]
        words = np.asarray(self.words)[ids]
        return [" ".join(words[i:i + words_per_line]) for i in range(0, len(words), words_per_line)]

    # -- exact likelihood ---------------------------------------------------
    def token_log_probs(self, token_ids: np.ndarray) -> np.ndarray:
        """``log P(x_t | x_{t-1})`` for ``t ≥ 1`` of every row of token ids: shape ``(n, L - 1)``.

        A transition from or to a token that is not a word (a special token)
        has probability 0 under the source and gets ``-inf``.
        """
        ids = np.asarray(token_ids, dtype=np.int64) - N_SPECIAL
        if ids.ndim == 1:
            ids = ids[None, :]
        prev, nxt = ids[:, :-1], ids[:, 1:]
        ok = (prev >= 0) & (prev < self.spec.n_words) & (nxt >= 0) & (nxt < self.spec.n_words)
        out = np.full(prev.shape, -np.inf)
        out[ok] = np.log(self.transition[prev[ok], nxt[ok]])
        return out

    def sequence_perplexity(self, token_ids: np.ndarray) -> np.ndarray:
        """The source's per-token perplexity of every row (the transitions inside the row)."""
        return np.exp(-self.token_log_probs(token_ids).mean(axis=1))

    # -- tokenizer ----------------------------------------------------------
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
