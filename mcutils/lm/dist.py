"""Several processes (``torchrun`` / ``accelerate launch``): who am I, wait for the others, add up.

Built on Accelerate's :class:`~accelerate.PartialState` (the process group, the
rank, ``wait_for_everyone``, ``split_between_processes``) and its collective
operations (``broadcast``, ``reduce``); the Trainer uses the same shared
state, so the engine and the Trainer see one process group.

Under one process every helper here is a no-op, so the engine's code reads
the same either way.  Work is sharded by whole batches: the list of batches
is split into contiguous runs, one per process (``split_between_processes``),
so a batch holds the same blocks whatever the number of processes; each
process fills its rows of a zero array, and a sum over processes
(``reduce``) gives every process the complete array.  (Accelerate's
``gather`` needs the same shape on every process, which uneven batch counts
do not give; a sum of zero-filled arrays needs nothing of the kind.)
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

_LOCAL_ONLY = False


def launched_distributed() -> bool:
    """Whether a launcher started several processes (it sets ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> None:
    """Join the process group the launcher prepared (gloo on the CPU, nccl on GPUs; Accelerate chooses)."""
    if launched_distributed():
        from accelerate import PartialState

        PartialState(cpu=device == "cpu")  # also sets this process's GPU from LOCAL_RANK


def _state():
    """Accelerate's shared state once some code created it (``init`` or the Trainer), else None.

    Not created here: a single process that never trains needs none, and
    creating one would fix its device choice for the Trainer.
    """
    from accelerate import PartialState

    return PartialState() if PartialState._shared_state else None


def _world_size() -> int:
    state = _state()
    return state.num_processes if state is not None else 1


def global_rank() -> int:
    state = _state()
    return state.process_index if state is not None else 0


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes that share the work (1 inside :func:`single_process`)."""
    if _LOCAL_ONLY:
        return 0, 1
    return global_rank(), _world_size()


# Accelerate has no switch for "every process does this small job alone", so this one stays ours.
@contextmanager
def single_process():
    """Inside, every process works alone on the whole input (small jobs not worth sharding)."""
    global _LOCAL_ONLY
    previous, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = previous


def is_main() -> bool:
    """The process that writes files and prints (rank 0 of the launch)."""
    return global_rank() == 0


def barrier() -> None:
    """Wait for every process (also inside :func:`single_process`: barriers are never skipped)."""
    if _world_size() > 1:
        _state().wait_for_everyone()


def agree(flag: bool) -> bool:
    """Every process takes the first process's answer (e.g. "is this file there?"): no racing checks.

    Accelerate's ``broadcast`` of a one-element tensor; kept as a helper because
    the engine asks yes/no questions, not tensors.
    """
    if _world_size() == 1:
        return bool(flag)
    import torch
    from accelerate.utils import broadcast

    state = _state()
    return bool(broadcast(torch.tensor([int(bool(flag))], device=state.device), from_process=0).item())


def my_batches(n_items: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of the batches this process handles (a contiguous share of all batches)."""
    batches = [(s, min(s + batch_size, n_items)) for s in range(0, n_items, batch_size)]
    if rank_and_world()[1] == 1:
        return batches
    with _state().split_between_processes(batches) as mine:
        return list(mine)


def sum_across(array: np.ndarray) -> np.ndarray:
    """Element-wise sum over processes (each filled only its own rows, the rest zero)."""
    if rank_and_world()[1] == 1:
        return array
    import torch
    from accelerate.utils import reduce

    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_state().device)
    return reduce(tensor, reduction="sum").cpu().numpy()
