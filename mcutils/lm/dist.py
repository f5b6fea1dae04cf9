"""Several processes (``torchrun`` / ``accelerate launch``): who am I, wait for the others, add up.

Under one process every helper here is a no-op, so the engine's code reads
the same either way.  Work is sharded by whole batches (batch ``i`` goes to
process ``i mod world``), so a batch holds the same blocks whatever the
number of processes, and each process's rows are added into a zero array
that every process then holds complete.
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
    """Join the process group the launcher prepared (gloo on the CPU, nccl on GPUs)."""
    import torch.distributed as td

    if launched_distributed() and not td.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            import torch
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        td.init_process_group(backend=backend)


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as td

    if not _LOCAL_ONLY and td.is_available() and td.is_initialized():
        return td.get_rank(), td.get_world_size()
    return 0, 1


@contextmanager
def single_process():
    """Inside, every process works alone on the whole input (small jobs not worth sharding)."""
    global _LOCAL_ONLY
    previous, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = previous


def global_rank() -> int:
    import torch.distributed as td

    return td.get_rank() if td.is_available() and td.is_initialized() else 0


def is_main() -> bool:
    """The process that writes files and prints (rank 0 of the launch)."""
    return global_rank() == 0


def _world_size() -> int:
    import torch.distributed as td

    return td.get_world_size() if td.is_available() and td.is_initialized() else 1


def barrier() -> None:
    """Wait for every process (also inside :func:`single_process`: barriers are never skipped)."""
    import torch.distributed as td

    if _world_size() > 1:
        td.barrier()


def agree(flag: bool) -> bool:
    """Every process takes the first process's answer (e.g. "is this file there?"): no racing checks."""
    if _world_size() == 1:
        return bool(flag)
    import torch
    import torch.distributed as td

    tensor = torch.tensor([int(bool(flag))])
    if td.get_backend() == "nccl":
        tensor = tensor.cuda()
    td.broadcast(tensor, src=0)
    return bool(tensor.item())


def my_batches(n_items: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of the batches this process handles."""
    rank, world = rank_and_world()
    starts = range(0, n_items, batch_size)
    return [(s, min(s + batch_size, n_items)) for i, s in enumerate(starts) if i % world == rank]


def sum_across(array: np.ndarray) -> np.ndarray:
    """Element-wise sum over processes (each filled only its own rows, the rest zero)."""
    rank, world = rank_and_world()
    if world == 1:
        return array
    import torch
    import torch.distributed as td

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if td.get_backend() == "nccl":
        tensor = tensor.cuda()
    td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor.cpu().numpy()
