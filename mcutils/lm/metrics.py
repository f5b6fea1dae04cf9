"""What a generation is scored by.

* Test perplexity of every generation's model on the real test split (Fig. 1,
  right): ``exp`` of the mean token loss over the test blocks.
* Per-sequence perplexity of a generation's data as scored by the
  generation-0 model (Fig. 1, left): ``exp`` of one block's mean token loss.
* For the synthetic language, what the paper could not measure: the true
  source's per-sequence perplexity of the data
  (:meth:`SyntheticLanguage.sequence_perplexity`) and the share of the real
  data's rare words and rare transitions still present (the tails that
  disappear first, §3).

Every per-token quantity covers the ``L - 1`` tokens of a block that have a
predecessor inside the block, for the model and the true source alike.
"""
from __future__ import annotations

import numpy as np
import torch

from . import dist

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@torch.no_grad()
def token_losses(model, blocks: np.ndarray, *, batch_size: int = 128, device: str = "cpu",
                 progress: bool = False, description: str = "score") -> np.ndarray:
    """Every next-token loss (nats) under ``model``: ``(n_blocks, L - 1)``, identical in every process."""
    from tqdm.auto import tqdm

    blocks = np.asarray(blocks, dtype=np.int64)
    model.eval().to(device)
    out = np.zeros((len(blocks), blocks.shape[1] - 1), dtype=np.float64)
    for start, stop in tqdm(dist.my_batches(len(blocks), batch_size), desc=description, leave=False,
                            unit="batch", disable=not (progress and dist.is_main())):
        ids = torch.as_tensor(blocks[start:stop], device=device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        out[start:stop] = losses.view(len(ids), -1).double().cpu().numpy()
    return dist.sum_across(out)


def sequence_losses(model, blocks: np.ndarray, **kwargs) -> np.ndarray:
    """Every block's mean next-token loss (nats) under ``model``."""
    return token_losses(model, blocks, **kwargs).mean(axis=1)


def perplexity_by_true_probability(losses: np.ndarray, true_log_probs: np.ndarray,
                                   threshold: float = 0.01) -> dict:
    """The model's perplexity on rare tokens (true probability below ``threshold``) and on the rest.

    Early model collapse (§3) is the tails going first: a model that has
    forgotten the rare events gets worse on the ``rare`` tokens before the
    ``common`` ones.  Needs the truth, so only the synthetic language has it.
    """
    rare = np.exp(true_log_probs) < threshold
    return {"threshold": threshold, "rare_token_share": float(rare.mean()),
            "rare": float(np.exp(losses[rare].mean())) if rare.any() else None,
            "common": float(np.exp(losses[~rare].mean())) if (~rare).any() else None}


def perplexity(losses: np.ndarray) -> float:
    """Corpus perplexity from per-block mean losses (all blocks have the same length)."""
    return float(np.exp(np.mean(losses)))


def summary(values: np.ndarray) -> dict:
    """Mean, quantiles and maximum of per-sequence values (``inf`` kept as a count, not averaged)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    out = {"n": int(len(values)), "n_infinite": int(len(values) - len(finite))}
    if len(finite):
        out["mean"] = float(finite.mean())
        out.update({f"q{int(q * 100):02d}": float(np.quantile(finite, q)) for q in QUANTILES})
        out["max"] = float(finite.max())
    return out


def _pairs(blocks: np.ndarray) -> np.ndarray:
    """Consecutive token pairs inside every block, encoded as one int64 each."""
    blocks = np.asarray(blocks, dtype=np.int64)
    return ((blocks[:, :-1] << 32) | blocks[:, 1:]).reshape(-1)


class TailReference:
    """The real training data's word and transition counts, to ask what of its tail survives."""

    def __init__(self, real_blocks: np.ndarray, rare_max_count: int):
        words, word_counts = np.unique(np.asarray(real_blocks).reshape(-1), return_counts=True)
        pairs, pair_counts = np.unique(_pairs(real_blocks), return_counts=True)
        self.words, self.pairs = words, pairs
        self.rare_words = words[word_counts <= rare_max_count]
        self.rare_pairs = pairs[pair_counts <= rare_max_count]
        self.rare_max_count = rare_max_count

    def survival(self, blocks: np.ndarray) -> dict:
        """Shares of the real data's (rare) words and transitions present in ``blocks``.

        Also the share of ``blocks``' transitions never seen in the real data:
        the errors that a model adds and later generations inherit.
        """
        words = np.unique(np.asarray(blocks).reshape(-1))
        pairs_all = _pairs(blocks)
        pairs = np.unique(pairs_all)
        return {
            "rare_max_count": self.rare_max_count,
            "n_rare_words": int(len(self.rare_words)),
            "n_rare_transitions": int(len(self.rare_pairs)),
            "rare_word_survival": _share(self.rare_words, words),
            "rare_transition_survival": _share(self.rare_pairs, pairs),
            "word_survival": _share(self.words, words),
            "transition_survival": _share(self.pairs, pairs),
            "distinct_words": int(len(words)),
            "distinct_transitions": int(len(pairs)),
            "unseen_transition_share": float(np.mean(~np.isin(pairs_all, self.pairs))),
        }


def tail_kept_text(tail: dict, words: str = "words") -> list[str]:
    """``["rare words kept 50%", "rare transitions kept 25%"]`` from :meth:`TailReference.survival`.

    A kind the real data has none of is left out: a language whose every word
    is frequent (the quick profile's) has no rare words, and its share is NaN.
    """
    return [f"rare {name} kept {tail[key]:.0%}"
            for name, count, key in ((words, "n_rare_words", "rare_word_survival"),
                                     ("transitions", "n_rare_transitions", "rare_transition_survival"))
            if tail.get(count)]


def _share(reference: np.ndarray, present: np.ndarray) -> float:
    return float(np.mean(np.isin(reference, present))) if len(reference) else float("nan")


def distinct_share(blocks: np.ndarray) -> float:
    """The share of blocks that no other block repeats exactly (1.0: all distinct)."""
    blocks = np.asarray(blocks)
    return float(len(np.unique(blocks, axis=0)) / len(blocks)) if len(blocks) else float("nan")


def repeated_ngram_share(blocks: np.ndarray, n: int = 4) -> float:
    """Mean share of a block's ``n``-grams that repeat an earlier one in the same block (Example 1's loops)."""
    blocks = np.asarray(blocks, dtype=np.int64)
    if blocks.shape[1] < n:
        return float("nan")
    windows = np.lib.stride_tricks.sliding_window_view(blocks, n, axis=1)  # (B, L-n+1, n)
    shares = []
    for grams in windows:
        _, first = np.unique(grams, axis=0, return_index=True)
        shares.append(1.0 - len(first) / len(grams))
    return float(np.mean(shares))
