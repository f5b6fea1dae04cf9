"""A fixed-shape beam search: Hugging Face's, token for token, without growing tensors.

:func:`mcutils.lm.generate.beam_continuations` asks for the one case of beam
search this engine needs: every prompt of a batch has the same length (no
padding), exactly ``new_tokens`` tokens are generated (``min_new_tokens =
max_new_tokens``, so end-of-text is barred until the last step and no beam
ever finishes early), ``length_penalty = 1.0``, an optional repetition
penalty, deterministic.  Hugging Face's general ``generate`` pays for its
generality at every step: its ``DynamicCache`` grows by ``torch.cat`` (a
copy of every layer's keys and values), ``reorder_cache`` copies the whole
cache again with ``index_select``, the running and the finished hypotheses
are (batch, 2 x beams, max_length) tensors gathered anew, and the prompt is
run through the model once per beam although all beams of a prompt start
identical.

:func:`beam_search` does the same arithmetic on the same numbers with

* preallocated key and value buffers per layer (rows x heads x (prompt +
  new) x head_dim, allocated once and written in place; the model sees
  views of the filled length, so its attention has the same shapes as with
  ``DynamicCache``);
* a **shared prefill**: the prompt goes through the model once per prompt,
  not once per beam, and its keys and values are broadcast to the beams.
  This is exact, not an approximation: Hugging Face starts beams 1..K-1 at
  score -1e9, so (with a vocabulary of more than 2K tokens) after the first
  step every beam descends from beam 0, and all beams of a prompt share beam
  0's prompt cache;
* beams reordered with ``index_select`` over the generated positions
  only (the prompt's positions are the same in every beam of a prompt and
  beams never move between prompts): on the CPU into a second buffer per
  layer, which the model reads from then on (double-buffered); elsewhere
  into one layer's scratch buffer and copied back (half the memory);
* the bookkeeping of the finished hypotheses (scores only, a few numbers per
  prompt) replayed exactly as Hugging Face does it, with the same
  ``torch.topk`` calls on the same tensors, so that ties are broken the same
  way.

The scores are bitwise those of ``generate`` when the model's forward gives
bitwise the same logits for the same rows, which holds on the CPU in fp32
(checked by ``tests/test_lm_beam.py`` against ``model.generate`` with
:func:`mcutils.lm.generate.generation_config`).  A GPU's matrix kernels may
pick another algorithm for a batch of B rows than for B x K rows; then a
near-tie between two beams can go the other way, and
``benchmarks/bench_lm_gpu.py`` reports whether the outputs were identical.
"""
from __future__ import annotations

import functools
import inspect

import torch

from .. import validate

# Hugging Face's "minus infinity but finite" for beams that must not be chosen
# (``generate`` adds it to the scores of beams 1..K-1 at the start, to
# finished candidates, and so on); the same constant keeps the same roundings.
_NEG = -1.0e9


@functools.lru_cache(maxsize=None)
def _cache_classes():
    """The cache class, built on first use so that importing this module does not import transformers."""
    from transformers.cache_utils import Cache, DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """One layer's keys and values in buffers allocated once and written in place.

        ``keys`` / ``values`` (what the model's attention reads) are views of
        the filled length, shaped as ``DynamicLayer``'s would be.
        """

        def __init__(self, rows: int, capacity: int, scratch: dict | None):
            super().__init__()
            self.rows, self.capacity, self.length = rows, capacity, 0
            self.shared_prompt = 0  # positions [0, shared_prompt) are the same in every beam of a prompt
            # None: double-buffered (a second buffer of its own); else one layer's spare keys and values,
            # shared by all layers (reorders copy back into the layer's one buffer).
            self.scratch = scratch
            self.double_buffered = scratch is None

        def lazy_initialization(self, key_states, value_states):
            self.device = key_states.device
            heads = key_states.shape[1]
            self._k, self._v = [], []
            for name, buffers, states in (("k", self._k, key_states), ("v", self._v, value_states)):
                shape = (self.rows, heads, self.capacity, states.shape[-1])
                buffers.append(torch.empty(shape, dtype=states.dtype, device=self.device))
                if self.double_buffered:
                    buffers.append(torch.empty_like(buffers[0]))
                else:
                    if name not in self.scratch:
                        self.scratch[name] = torch.empty_like(buffers[0])
                    buffers.append(self.scratch[name])
            self.current = 0  # which buffer of the two the model reads
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, start = key_states.shape[-2], self.length
            if start + n > self.capacity:
                raise RuntimeError(f"preallocated cache of {self.capacity} positions overflows")
            if key_states.shape[0] != self.rows:
                # The shared prefill: one row per prompt, broadcast to its beams (double-buffered: in both
                # buffers, as the prompt's positions are never reordered).
                if start or self.rows % key_states.shape[0]:
                    raise RuntimeError("a batch of other rows than the cache's can only be its first prompt")
                beams = self.rows // key_states.shape[0]
                # index_select rather than a broadcasting copy_: the same values, and measured 6 times
                # faster into freshly allocated memory (2.8 ms against 16.5 for the quick stand-in's batch).
                source = torch.arange(key_states.shape[0], device=self.device).repeat_interleave(beams)
                for buffers, states in ((self._k, key_states), (self._v, value_states)):
                    for buffer in buffers[:1 + self.double_buffered]:
                        torch.index_select(states, 0, source, out=buffer[:, :, :n])
                self.length, self.shared_prompt = n, n
                self._publish()
                return key_states, value_states  # the prefill's attention reads its own keys, as DynamicLayer's
            # (A prefill of every row, shared_prefill=False, leaves shared_prompt at 0: reorders then move
            # the prompt's positions too, so the other buffer needs no copy of them.)
            self._k[self.current][:, :, start:start + n].copy_(key_states)
            self._v[self.current][:, :, start:start + n].copy_(value_states)
            self.length = start + n
            self._publish()
            return self.keys, self.values

        def _publish(self):
            self.keys = self._k[self.current][:, :, :self.length]
            self.values = self._v[self.current][:, :, :self.length]

        def get_seq_length(self) -> int:
            return self.length

        def reorder_rows(self, rows: torch.Tensor) -> None:
            """Row ``i`` becomes old row ``rows[i]``, over the positions not shared by all beams of a prompt.

            Double-buffered: ``index_select`` from the current buffer into the
            other, which becomes the current one: one pass over the generated
            positions.  Single-buffered: into the other buffer, then copied
            back (two passes, the current buffer stays where it is).
            """
            lo, hi = self.shared_prompt, self.length
            if hi > lo:
                other = 1 - self.current
                for buffers in (self._k, self._v):
                    torch.index_select(buffers[self.current][:, :, lo:hi], 0, rows,
                                       out=buffers[other][:, :, lo:hi])
                    if not self.double_buffered:
                        buffers[self.current][:, :, lo:hi].copy_(buffers[other][:, :, lo:hi])
                if self.double_buffered:
                    self.current = other
            self._publish()

        def reorder_cache(self, beam_idx):
            self.reorder_rows(beam_idx)

    class PreallocatedCache(Cache):
        def __init__(self, n_layers: int, rows: int, capacity: int, double_buffered: bool):
            scratch = None if double_buffered else {}
            super().__init__(layers=[PreallocatedLayer(rows, capacity, scratch) for _ in range(n_layers)])

        def reorder_rows(self, rows: torch.Tensor) -> None:
            for layer in self.layers:
                layer.reorder_rows(rows)

    return PreallocatedCache


def _n_layers(config) -> int:
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, name, None) is not None:
            return int(getattr(config, name))
    raise validate.ParameterError(f"cannot tell the number of layers of a {type(config).__name__}")


def _eos_ids(model, eos_token_id) -> list[int]:
    if eos_token_id is None:
        eos_token_id = model.config.eos_token_id
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return [validate.non_negative_int("eos_token_id", int(i)) for i in ids]


def _processed(scores: torch.Tensor, seen: torch.Tensor, repetition_penalty: float,
               eos_ids: torch.Tensor) -> torch.Tensor:
    """Hugging Face's processors for this search, in its order: repetition penalty, then end-of-text barred.

    ``RepetitionPenaltyLogitsProcessor``: every token id in the row so far
    (``seen``, prompt included) has its score ``x`` replaced by ``x * r`` if
    ``x < 0``, else ``x / r`` (duplicates in ``seen`` write the same value).
    ``MinNewTokensLengthLogitsProcessor``: end-of-text gets ``-inf``.
    """
    if repetition_penalty != 1.0:
        score = torch.gather(scores, 1, seen)
        score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        scores = scores.scatter(1, seen, score)
    if eos_ids.numel():
        scores[:, eos_ids] = -float("inf")
    return scores


@torch.no_grad()
def beam_search(model, input_ids: torch.Tensor, *, new_tokens: int, num_beams: int = 5,
                repetition_penalty: float = 1.0, eos_token_id: int | list[int] | None = None,
                shared_prefill: bool = True, double_buffered: bool | None = None) -> torch.Tensor:
    """The ``new_tokens`` tokens beam search appends to every row of ``input_ids``: ``(batch, new_tokens)``.

    The same search as ``model.generate(input_ids, attention_mask=ones,
    generation_config=generation_config(model, new_tokens, num_beams,
    repetition_penalty))``, whose output is ``input_ids`` followed by these
    tokens.  At each step ``t`` (``cur = prompt + t`` tokens so far), for
    every beam with running score ``s`` (the sum of its processed
    log-probabilities; beams 1..K-1 start at -1e9, beam 0 at 0):

    1. ``logp = log_softmax(logits)`` of its last position, in fp32;
    2. repetition penalty (Hugging Face's, applied to log-probabilities):
       every token already in the beam (prompt included) gets ``logp * r``
       when ``logp < 0``, else ``logp / r``;
    3. end-of-text gets ``-inf`` (``min_new_tokens`` not reached);
    4. the ``2K`` best of the ``K x vocab`` sums ``s + logp`` are the
       candidates; the ``K`` best of them not ending the sequence are the new
       beams (at the last step every candidate ends it, by length, and the
       best of the first ``K``, scored ``(s + logp) / new_tokens``, is the
       answer).

    With ``num_beams=1`` ``generate`` runs greedy search instead, whose
    processors act on the logits rather than on log-probabilities (a
    repetition penalty then divides positive logits); so does this function.
    ``shared_prefill=False`` runs the prompt once per beam, as ``generate``
    does (for a check of the claim that sharing it is exact).

    ``double_buffered`` (default: on the CPU only) keeps a second key and
    value buffer per layer, so that a reorder is one pass into the other
    buffer instead of a pass into a shared scratch buffer and a copy back.
    It changes no token, only speed and memory: on the quick profile's
    stand-in (128 prompts, one thread, 2-core AMD EPYC) it made the search
    1.04-1.11 times as fast alone and 1.10-1.15 times with a second process
    doing the same beside it, as the chapter's chains run (three runs each
    of ``measure_double_buffering`` in ``benchmarks/bench_lm.py``), at the
    price of a second full cache; on a GPU memory is scarcer than copy time.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        raise validate.ParameterError("input_ids must be a 2-D tensor of token ids (batch, prompt_length)")
    validate.positive_int("new_tokens", new_tokens)
    validate.integer("num_beams", num_beams, minimum=1, maximum=64)
    validate.number("repetition_penalty", repetition_penalty, minimum=0.0, strict_minimum=True)
    batch, prompt_len = input_ids.shape
    validate.positive_int("prompt length", prompt_len)
    eos = _eos_ids(model, eos_token_id)
    device = input_ids.device
    K, rows, total = num_beams, batch * num_beams, prompt_len + new_tokens
    keep = max(2, 1 + len(eos)) * K  # Hugging Face keeps (ends + 1) x K candidates, at least 2K
    if double_buffered is None:
        double_buffered = device.type == "cpu"
    validate.boolean("double_buffered", double_buffered)
    cache = _cache_classes()(_n_layers(model.config), rows, total, bool(double_buffered))

    tokens = torch.empty((rows, total), dtype=torch.long, device=device)
    tokens[:, :prompt_len] = input_ids.repeat_interleave(K, dim=0)
    spare = torch.empty_like(tokens)
    ones = torch.ones((rows, total), dtype=torch.long, device=device)
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device)
    offset = (torch.arange(batch, device=device) * K).view(-1, 1)
    top_mask = torch.zeros(keep, dtype=torch.bool, device=device)
    top_mask[:K] = True

    running = torch.zeros((batch, K), dtype=torch.float32, device=device)
    running[:, 1:] = _NEG
    finished_scores = torch.full((batch, K), _NEG, dtype=torch.float32, device=device)
    is_finished = torch.zeros((batch, K), dtype=torch.bool, device=device)
    improvable = torch.ones((batch, 1), dtype=torch.bool, device=device)

    prefill = input_ids if shared_prefill else tokens[:, :prompt_len]
    # The last position's logits only, as ``generate`` asks when the model takes ``logits_to_keep``.
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=prefill, attention_mask=torch.ones_like(prefill), cache=cache, use_cache=True,
                return_dict=True, **last_only)
    logits = out.logits[:, -1, :].to(dtype=torch.float32, copy=True)
    del out
    if shared_prefill:
        logits = logits.repeat_interleave(K, dim=0)
    vocab = logits.shape[-1]

    for step in range(new_tokens):
        cur = prompt_len + step
        last = step == new_tokens - 1
        if K == 1:
            # One beam: Hugging Face runs greedy search, whose processors act on the logits themselves.
            tokens[:, cur] = _processed(logits, tokens[:, :cur], repetition_penalty, eos_ids).argmax(dim=-1)
            if last:
                return tokens[:, prompt_len:total].clone()
        else:
            logp = _processed(torch.nn.functional.log_softmax(logits, dim=-1), tokens[:, :cur],
                              repetition_penalty, eos_ids)
            acc = (logp.view(batch, K, vocab) + running[:, :, None]).view(batch, K * vocab)
            top_scores, top_index = torch.topk(acc, k=keep)
            parent = top_index // vocab
            token = top_index % vocab
            if last:  # every candidate ends here, by length
                ends = torch.ones((batch, keep), dtype=torch.bool, device=device)
            elif eos:
                ends = torch.isin(token, eos_ids)
            else:
                ends = torch.zeros((batch, keep), dtype=torch.bool, device=device)

            # The running beams: the K best candidates that do not end (Hugging Face's order of operations).
            running_scores = top_scores + ends.to(torch.float32) * _NEG
            chosen = torch.topk(running_scores, k=K)[1]
            running = running_scores.gather(1, chosen)

            # The finished hypotheses, scores only: a candidate among the first K that ends joins them.
            just_finished = ends & top_mask[None, :]
            final = top_scores / ((step + 1) ** 1.0)  # length_penalty 1.0, over the new tokens
            final = final + (~improvable).to(torch.float32) * _NEG
            final = final + (~just_finished) * _NEG
            merged = torch.cat((finished_scores, final), dim=1)
            best = torch.topk(merged, k=K)[1]
            finished_scores = merged.gather(1, best)
            is_finished = torch.cat((is_finished, just_finished), dim=1).gather(1, best)
            if last:
                break

            source = (parent.gather(1, chosen) + offset).view(-1)
            torch.index_select(tokens[:, :cur], 0, source, out=spare[:, :cur])
            tokens, spare = spare, tokens
            tokens[:, cur] = token.gather(1, chosen).view(-1)
            cache.reorder_rows(source)

            # Hugging Face's early-stopping heuristic (it never fires with finite scores; replayed to be sure).
            best_running = running[:, :1] / ((step + 1) ** 1.0)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], _NEG)
            improvable = improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)

        out = model(input_ids=tokens[:, cur:cur + 1], attention_mask=ones[:, :cur + 1], cache=cache,
                    use_cache=True, return_dict=True, **last_only)
        logits = out.logits[:, -1, :].to(dtype=torch.float32, copy=True)
        del out

    # The answer: the best finished hypothesis, one of the last step's candidates.
    winner = best[:, 0] - K
    if bool((winner < 0).any()):
        raise RuntimeError("beam search: a hypothesis that ended before the last step won; the fixed-shape "
                           "search assumes min_new_tokens = max_new_tokens")
    if not bool(improvable.any()):  # it only ever falls: checked once, at the end, not at every step
        raise RuntimeError("beam search: Hugging Face's early-stopping heuristic would have ended the search early")
    rows_won = parent.gather(1, winner[:, None]).squeeze(1) + offset.squeeze(1)
    answer = tokens.index_select(0, rows_won)[:, prompt_len:total]
    answer[:, -1] = token.gather(1, winner[:, None]).squeeze(1)
    return answer
