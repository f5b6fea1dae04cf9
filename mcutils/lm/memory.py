"""Peak GPU memory of fine-tuning and of 5-beam generation, and the batch sizes that fit a card.

Everything is computed from the model's configuration (an ``OPTConfig``; the
defaults of ``transformers.OPTConfig`` are facebook/opt-125m's: hidden 768,
12 layers, 12 heads, ffn 3072, vocabulary 50272, 2048 positions), the
sequence length, the beams and the precision, by counting the tensors that
are alive at the moment of the peak.  Notation: ``P`` parameters, ``V``
vocabulary, ``h`` hidden size, ``d`` word-embedding size (``h`` for
OPT-125m), ``f`` ffn size, ``a`` heads, ``L`` layers, ``b`` batch, ``T``
tokens per sequence, ``K`` beams, ``s`` bytes of an element in the compute
precision (4 in fp32, 2 in fp16/bf16).

``python -m mcutils.lm.memory --table`` prints the table of
``book/running.md`` ("Memory and batch sizes on real GPUs").
``tests/test_lm_memory.py`` checks the formulas against peaks measured on
the CPU for small configurations.

What is not counted: the CUDA context and the kernels' workspaces (a few
hundred MB outside ``torch.cuda.max_memory_allocated``) and the caching
allocator's fragmentation.  :func:`choose_batch_sizes` leaves room for both
(``memory_fraction`` and ``reserved_bytes``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass

from .. import validate
from .settings import PRECISIONS

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
BACKENDS = ("hf", "static")
GIB = 1024 ** 3
MIB = 1024 ** 2

# The cards of the table, with the memory ``nvidia-smi`` reports, and the half precision each can use
# (Turing's T4 has no bf16).
GPUS = (
    ("8 GB card (RTX 3070, 4060)", 8_192 * MIB, "bf16"),  # a card where batch 128 does not fit
    ("T4 (16 GB)", 15_360 * MIB, "fp16"),       # Turing: no bf16; Trainer's fp16 autocast
    ("24 GB card (A10, L4, RTX 3090/4090)", 24_576 * MIB, "bf16"),
    ("80 GB card (A100, H100)", 81_920 * MIB, "bf16"),
)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of an OPT decoder that memory depends on."""

    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    max_positions: int
    embed_dim: int       # word_embed_proj_dim (= hidden_size unless projected)
    dropout: float       # residual dropout, active in training (stores a 1-byte mask per element)


def shape_of(config) -> ModelShape:
    """:class:`ModelShape` of an ``OPTConfig`` (or anything with its attribute names, or a ModelShape)."""
    if isinstance(config, ModelShape):
        return config
    try:
        out = ModelShape(
            vocab_size=int(config.vocab_size), hidden_size=int(config.hidden_size),
            n_layers=int(config.num_hidden_layers), n_heads=int(config.num_attention_heads),
            ffn_dim=int(config.ffn_dim), max_positions=int(config.max_position_embeddings),
            embed_dim=int(getattr(config, "word_embed_proj_dim", None) or config.hidden_size),
            dropout=float(getattr(config, "dropout", 0.0) or 0.0))
    except AttributeError as exc:
        raise validate.ParameterError(
            f"config must be an OPTConfig (vocab_size, hidden_size, num_hidden_layers, num_attention_heads, "
            f"ffn_dim, max_position_embeddings); {type(config).__name__} lacks {exc.name!r}") from exc
    for name in ("vocab_size", "hidden_size", "n_layers", "n_heads", "ffn_dim", "max_positions", "embed_dim"):
        validate.positive_int(f"config {name}", getattr(out, name))
    return out


def opt_125m_config():
    """facebook/opt-125m's configuration, built locally (``OPTConfig``'s defaults are that model's)."""
    from transformers import OPTConfig

    return OPTConfig()


def _precision(precision: str) -> int:
    validate.choice("precision", precision, PRECISIONS)
    return BYTES[precision]


# -- parameters ------------------------------------------------------------------------------

def n_parameters(config) -> int:
    """OPT's parameter count.

    ``V d`` token embeddings (tied with the output layer), ``(max_positions
    + 2) h`` learned positions (OPT offsets them by 2), ``2 h d`` for the
    in/out projections when ``d != h``, and per layer ``4 (h^2 + h)``
    (q, k, v, out with biases) ``+ 2 (2 h)`` (two layer norms) ``+ (h f +
    f) + (f h + h)`` (the feed-forward), and ``2 h`` for the final layer
    norm.  OPT-125m: 125,239,296.
    """
    m = shape_of(config)
    h, f = m.hidden_size, m.ffn_dim
    per_layer = 4 * (h * h + h) + 4 * h + (h * f + f) + (f * h + h)
    projections = 2 * h * m.embed_dim if m.embed_dim != h else 0
    return m.vocab_size * m.embed_dim + (m.max_positions + 2) * h + projections + m.n_layers * per_layer + 2 * h


def _n_matmul_parameters(config) -> int:
    """The parameters autocast casts to 16 bits: every linear layer's weight and bias, and the output layer."""
    m = shape_of(config)
    h, f = m.hidden_size, m.ffn_dim
    projections = 2 * h * m.embed_dim if m.embed_dim != h else 0
    return m.vocab_size * m.embed_dim + projections + m.n_layers * (4 * (h * h + h) + (h * f + f) + (f * h + h))


# -- training -------------------------------------------------------------------------------

def activation_bytes_per_token(config, precision: str = "fp32") -> int:
    """Bytes that one token's forward pass keeps for the backward pass (training, without the logits).

    Per layer of the pre-norm OPT block, what autograd saves:

    ====================================================  ==============
    tensor                                                bytes
    ====================================================  ==============
    block input, the residual stream (layer norm 1 input)  4 h
    layer norm 1 output (q, k, v projections' input)       s h
    q, k, v (scaled dot-product attention)                 3 s h
    attention output, and its log-sum-exp                  s h + 4 a
    out-projection input (the contiguous copy)             s h
    residual after attention (layer norm 2 input)          4 h
    layer norm 2 output (fc1 input)                        s h
    ReLU output (fc2 input)                                s f
    two dropout masks (1 byte each, if dropout > 0)        2 h
    layer norms' mean and 1/std (fp32)                     16
    ====================================================  ==============

    The residual stream stays fp32 under autocast (an fp16 branch added to
    an fp32 residual promotes), and so do layer norms' outputs; autocast's
    16-bit copy of a layer norm's output is what the next matrix product
    saves (in fp32 it is the output itself: ``s h`` either way).  Attention
    through SDPA's fused kernels keeps no ``T x T`` probabilities (the
    attention dropout, where there is one, draws its mask inside the kernel).
    Then the final layer norm: ``4 h`` input ``+ s h`` output.  Total
    ``L (h (8 + 7 s + 2 m) + s f + 4 a + 16) + (4 + s) h`` with ``m = 1``
    when dropout is on.  OPT-125m (dropout 0.1) in fp32: 41,536 bytes a layer,
    504,576 a token.
    """
    m = shape_of(config)
    s = _precision(precision)
    h, f, a = m.hidden_size, m.ffn_dim, m.n_heads
    mask = 1 if m.dropout > 0 else 0
    per_layer = h * (8 + 7 * s + 2 * mask) + s * f + 4 * a + 16
    return m.n_layers * per_layer + (4 + s) * h


def logits_bytes_per_token(config) -> int:
    """Bytes per token of the output layer and the loss at their peak, the start of the backward pass: ``12 V``.

    Hugging Face's causal-LM loss takes the logits in fp32 and calls
    ``cross_entropy``, which saves the log-softmax output (``4 V``); the
    backward pass then holds it, the gradient of the loss with respect to it
    (``4 V``) and the gradient with respect to the logits (``4 V``) at once.
    (The forward pass holds less: logits ``s V``, their fp32 copy under
    autocast ``4 V``, the log-softmax ``4 V``; the logits themselves are
    freed before the backward pass, as Trainer drops the model's outputs.)
    """
    return 12 * shape_of(config).vocab_size


def training_breakdown(config, batch_size: int, seq_len: int, precision: str = "fp32",
                       accumulating: bool = False) -> dict:
    """The terms of :func:`training_peak_bytes`, in bytes, and which phase peaks."""
    validate.positive_int("batch_size", batch_size)
    validate.positive_int("seq_len", seq_len)
    s = _precision(precision)
    P = n_parameters(config)
    tokens = batch_size * seq_len
    weights, grads, adam = 4 * P, 4 * P, 8 * P  # fp32 master weights under autocast too
    cast = 2 * _n_matmul_parameters(config) if s == 2 else 0
    activations = tokens * activation_bytes_per_token(config, precision)
    logits = tokens * logits_bytes_per_token(config)
    inputs = 2 * 8 * tokens  # input_ids and labels, int64
    # Start of the backward pass: everything the forward saved, the loss's buffers, no gradients yet
    # (Trainer sets them to None after each step) unless micro-batches accumulate them.
    backward = weights + adam + cast + activations + logits + inputs + (grads if accumulating else 0)
    # AdamW's step (foreach, the GPU default): gradients, states and one temporary per parameter
    # (the denominator sqrt(v) + eps).
    step = weights + grads + adam + 4 * P
    return {"weights": weights, "gradients": grads, "optimizer": adam, "autocast_weights": cast,
            "activations": activations, "logits": logits, "backward_start": backward, "optimizer_step": step,
            "peak": max(backward, step), "phase": "backward" if backward >= step else "optimizer step"}


def training_peak_bytes(config, batch_size: int, seq_len: int, precision: str = "fp32",
                        accumulating: bool = False) -> int:
    """Peak memory of one fine-tuning step of ``batch_size`` sequences of ``seq_len`` tokens (AdamW, Trainer).

    ``max(backward start, optimizer step)`` with

    * backward start ``= 16 P`` (weights ``4 P``, AdamW's two moments ``8 P``,
      and ``4 P`` of gradients only when ``accumulating`` micro-batches)
      ``+ 2 P_matmul`` under fp16/bf16 autocast (its 16-bit copies of the
      weights, saved for the backward pass) ``+ b T (activations + 12 V)``
      (:func:`activation_bytes_per_token`, :func:`logits_bytes_per_token`);
    * optimizer step ``= 20 P`` (weights, gradients, two moments, one temporary).

    The first step peaks lower (AdamW creates its moments during it).
    OPT-125m, batch 128 of 64 tokens: 10.6 GB in fp32, 9.2 GB under autocast.
    """
    return training_breakdown(config, batch_size, seq_len, precision, accumulating)["peak"]


# -- generation -----------------------------------------------------------------------------

def kv_cache_bytes(config, rows: int, tokens: int, precision: str = "fp32") -> int:
    """Keys and values of every layer: ``2 L rows tokens h s``."""
    m = shape_of(config)
    return 2 * m.n_layers * rows * tokens * m.hidden_size * _precision(precision)


def generation_breakdown(config, batch_size: int, num_beams: int = 5, prompt_len: int = 64,
                         new_tokens: int = 64, precision: str = "fp32", backend: str = "hf",
                         double_buffered: bool = False) -> dict:
    """The terms of :func:`generation_peak_bytes`, in bytes, and which phase peaks."""
    validate.positive_int("batch_size", batch_size)
    validate.integer("num_beams", num_beams, minimum=1, maximum=64)
    validate.positive_int("prompt_len", prompt_len)
    validate.positive_int("new_tokens", new_tokens)
    validate.choice("backend", backend, BACKENDS)
    s = _precision(precision)
    m = shape_of(config)
    V, h, f = m.vocab_size, m.hidden_size, m.ffn_dim
    rows, total = batch_size * num_beams, prompt_len + new_tokens
    weights = s * n_parameters(config)
    one_layer = kv_cache_bytes(config, rows, total, precision) // m.n_layers
    if backend == "hf":
        # DynamicCache grows with the sequence; the prefill runs every beam's copy of the prompt.
        prefill_rows = rows
        cache_at_prefill = kv_cache_bytes(config, rows, prompt_len, precision)
        cache_at_end = kv_cache_bytes(config, rows, total, precision)
        reorder_copy = one_layer  # torch.cat / index_select make a layer's new keys (values) before freeing the old
    else:
        # Preallocated: the full cache and a layer's scratch (double-buffered: a second full cache) from
        # the start; prefill once per prompt.
        prefill_rows = batch_size
        spare = kv_cache_bytes(config, rows, total, precision) if double_buffered else one_layer
        cache_at_prefill = kv_cache_bytes(config, rows, total, precision) + spare
        cache_at_end = cache_at_prefill
        reorder_copy = 0
    # Both keep the prefill's logits of the last position only (logits_to_keep=1), then copy them to fp32.
    prefill_logits = prefill_rows * V * s + rows * V * 4
    # Inside one layer of the prefill (no autograd), per token: the token and position embeddings (the
    # decoder keeps both in local variables to the end) and the block's input (held by the caller), then
    # in the attention the layer norm's output, q, the attention output, its contiguous copy and the
    # out-projection (8 h in all; k and v are the cache's); in the feed-forward the residual, the layer
    # norm's output, fc1's output and the ReLU's (4 h + 2 f).
    prefill_layer = prefill_rows * prompt_len * max(8 * h, 4 * h + 2 * f) * s
    prefill = weights + cache_at_prefill + prefill_logits + prefill_layer
    # A decoding step: logits (s) and their fp32 copy, log-softmax, repetition-penalised scores and the
    # beam sums (b, K V), each rows x V x 4 bytes.
    decode = weights + cache_at_end + reorder_copy + rows * V * (s + 4 * 4)
    return {"weights": weights, "kv_cache": kv_cache_bytes(config, rows, total, precision),
            "prefill_logits": prefill_logits, "prefill": prefill, "decode": decode,
            "peak": max(prefill, decode), "phase": "prefill" if prefill >= decode else "decoding"}


def generation_peak_bytes(config, batch_size: int, num_beams: int = 5, prompt_len: int = 64,
                          new_tokens: int = 64, precision: str = "fp32", backend: str = "hf",
                          double_buffered: bool = False) -> int:
    """Peak memory of beam search over ``batch_size`` prompts (``rows = b K`` beams), no autograd.

    ``max(prefill, decoding)`` above the weights ``s P``:

    * ``backend="hf"`` (``model.generate``): prefill ``= 2 L (b K) T_p h s``
      (the prompt's cache) ``+ (b K) T_p max(8 h, 4 h + 2 f) s`` (one layer's
      intermediate tensors) ``+ (b K) V (s + 4)`` (the last position's
      logits and their fp32 copy); decoding ``= 2 L (b K) (T_p + T_n) h s`` (the full cache)
      ``+ 2 (b K)(T_p + T_n) h s`` (one layer's copy while ``torch.cat`` /
      ``reorder_cache`` replace it) ``+ (b K) V (s + 16)`` (logits, their
      fp32 copy, log-softmax, penalised scores, beam sums);
    * ``backend="static"`` (:func:`mcutils.lm.beam.beam_search`): the full
      cache and one layer's scratch from the start; the prefill runs
      ``b`` rows, not ``b K``.  ``double_buffered=True`` (its default on
      the CPU) holds a second full cache instead of the one layer's scratch.

    OPT-125m, 128 prompts of 64 tokens, 64 new, 5 beams, fp32: the cache
    alone is 2 x 12 x 640 x 128 x 768 x 4 bytes = 6.0 GB.
    """
    return generation_breakdown(config, batch_size, num_beams, prompt_len, new_tokens, precision, backend,
                                double_buffered)["peak"]


# -- batch sizes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    """What the engine would run on a card: per-device training batch x accumulation = the global batch."""

    train_batch_size: int
    gradient_accumulation_steps: int
    generation_batch_size: int
    training_peak_bytes: int
    generation_peak_bytes: int
    usable_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def usable_bytes(gpu_memory_bytes: int, memory_fraction: float = 0.9, reserved_bytes: int = 768 * MIB) -> int:
    """What the tensors may take: ``memory_fraction`` of the card, less the CUDA context and workspaces."""
    validate.positive_int("gpu_memory_bytes", gpu_memory_bytes)
    validate.number("memory_fraction", memory_fraction, minimum=0.0, maximum=1.0, strict_minimum=True)
    validate.non_negative_int("reserved_bytes", reserved_bytes)
    return int(gpu_memory_bytes * memory_fraction) - reserved_bytes


def choose_batch_sizes(config, gpu_memory_bytes: int, precision: str = "fp32", *, global_batch: int = 128,
                       seq_len: int = 64, num_beams: int = 5, new_tokens: int = 64,
                       max_generation_batch: int = 128, backend: str = "hf", memory_fraction: float = 0.9,
                       reserved_bytes: int = 768 * MIB, generation_precision: str = "fp32") -> BatchPlan:
    """The largest per-device training batch dividing ``global_batch`` that fits, its accumulation, and the
    largest generation batch (at most ``max_generation_batch``) that fits.

    Training in ``precision`` (Trainer's autocast for fp16/bf16), generation
    in ``generation_precision`` (fp32, as the official code and the engine
    generate).  A micro-batch smaller than ``global_batch`` accumulates
    gradients, so its peak counts them (``accumulating=True``).  Raises
    :class:`~mcutils.validate.ParameterError` when not even one sequence fits.
    """
    validate.positive_int("global_batch", global_batch)
    validate.positive_int("max_generation_batch", max_generation_batch)
    usable = usable_bytes(gpu_memory_bytes, memory_fraction, reserved_bytes)
    train = None
    for micro in sorted((d for d in range(1, global_batch + 1) if global_batch % d == 0), reverse=True):
        peak = training_peak_bytes(config, micro, seq_len, precision, accumulating=micro < global_batch)
        if peak <= usable:
            train = (micro, peak)
            break
    if train is None:
        raise validate.ParameterError(
            f"gpu_memory_bytes={gpu_memory_bytes}: not even one training sequence fits "
            f"({usable / GIB:.1f} GiB usable)")
    def generation_peak(batch):
        return generation_peak_bytes(config, batch, num_beams, seq_len, new_tokens, generation_precision, backend)

    if generation_peak(1) > usable:
        raise validate.ParameterError(
            f"gpu_memory_bytes={gpu_memory_bytes}: not even one prompt's beam search fits "
            f"({usable / GIB:.1f} GiB usable)")
    lo, hi = 1, max_generation_batch  # the peak grows with the batch: bisect for the largest that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if generation_peak(mid) <= usable else (lo, mid - 1)
    return BatchPlan(
        train_batch_size=train[0], gradient_accumulation_steps=global_batch // train[0],
        generation_batch_size=lo, training_peak_bytes=train[1], generation_peak_bytes=generation_peak(lo),
        usable_bytes=usable)


# -- measuring on the CPU ------------------------------------------------------------------------

def cpu_peak_bytes(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), peak)``: the most bytes torch's CPU tensors held at once during the call, above
    what they held when it began.

    Measured with ``torch.profiler`` (``profile_memory=True``): every op and
    every free is an event with its own net bytes ("self" memory:
    allocations minus frees, children excluded); their running sum in time
    order is the live memory, and its maximum the peak.  Op-granular: a
    temporary made and freed inside one op is not seen; an op's net
    allocation counts from its start and a net release from its end, which
    can only overstate the peak, by the overlap of one op's inputs and outputs.  (``tracemalloc`` does not see torch's
    allocator, and the process's RSS also holds the heap's free chunks.)
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn(*args, **kwargs)
    # An event's net allocation counts from its start, its net release from its end: an enclosing event
    # (autograd's "evaluate_function") frees its inputs after its children ran, not before.
    changes = []
    for event in prof.events():
        net = event.self_cpu_memory_usage
        if net:
            changes.append((event.time_range.start if net > 0 else event.time_range.end, net))
    live = peak = 0
    for _, net in sorted(changes, key=lambda change: (change[0], -change[1])):
        live += net
        peak = max(peak, live)
    return result, peak


# -- the table of book/running.md ------------------------------------------------------------------

def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def table(config=None, *, global_batch: int = 128, seq_len: int = 64, num_beams: int = 5,
          new_tokens: int = 64, largest: int = 4096) -> str:
    """The markdown table of OPT-125m's memory and batch sizes on the cards of :data:`GPUS`.

    Generation in fp32 (the engine's and the official code's); its batch is
    capped at the engine's ``generation_batch_size`` (``global_batch``); the
    last column is the largest batch that would fit (up to ``largest``).
    """
    config = opt_125m_config() if config is None else config
    full_train = {p: training_peak_bytes(config, global_batch, seq_len, p) for p in ("fp32", "fp16")}
    full_gen = {b: generation_peak_bytes(config, global_batch, num_beams, seq_len, new_tokens, "fp32", b)
                for b in BACKENDS}
    lines = [
        f"At the paper's sizes (batch {global_batch} of {seq_len} tokens; {num_beams} beams, {seq_len}-token "
        f"prompts, {new_tokens} new tokens) the peaks are: training {_gb(full_train['fp32'])} in fp32, "
        f"{_gb(full_train['fp16'])} under fp16/bf16 autocast; generation (fp32) {_gb(full_gen['hf'])} with "
        f"`generate`, {_gb(full_gen['static'])} with the fixed-shape search.",
        "",
        "| GPU | usable | training precision | training batch x accumulation | training peak | "
        "generation batch | generation peak | largest generation batch (`generate` / fixed-shape) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    common = dict(global_batch=global_batch, seq_len=seq_len, num_beams=num_beams, new_tokens=new_tokens)
    for name, memory, half in GPUS:
        for precision in ("fp32", half):
            plan = choose_batch_sizes(config, memory, precision, **common)
            most = [choose_batch_sizes(config, memory, precision, max_generation_batch=largest, backend=backend,
                                       **common).generation_batch_size for backend in BACKENDS]
            label = precision if precision == "fp32" else f"{precision} autocast"
            lines.append(
                f"| {name} | {_gb(plan.usable_bytes)} | {label} | {plan.train_batch_size} x "
                f"{plan.gradient_accumulation_steps} | {_gb(plan.training_peak_bytes)} | "
                f"{plan.generation_batch_size} | {_gb(plan.generation_peak_bytes)} | {most[0]} / {most[1]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the markdown table of book/running.md")
    args = parser.parse_args(argv)
    if not args.table:
        parser.print_help()
        return 2
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
