"""``reszoo predict`` over several processes: ``torchrun --nproc-per-node N -m reszoo.cli predict ...``
(or ``accelerate launch``), each process a shard, the rows gathered in input order into one output.

Every process lists the inputs the same way (the listing is sorted) and runs every ``world``-th
batch of them: process ``r`` the batches ``r``, ``r + world``, ... After each round of ``world``
batches, process 0 gathers their row groups (Python objects over a gloo group, whatever device
the models run on) and hands them on in input order, so memory holds one round and the output is
what one process would write. ``--resume`` is read by process 0 and sent to the others.

Light on import: torch is imported when running.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import InputError

__all__ = ["gathered_groups", "world"]


def world() -> tuple[int, int, int]:
    """``(rank, local rank, world size)`` from torchrun's (or accelerate's) environment; ``(0, 0, 1)`` alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def device_for(device: str | None) -> str | None:
    """Each process its own GPU (``cuda:LOCAL_RANK``) when the models run on CUDA; else ``device``."""
    _, local_rank, size = world()
    if size > 1 and device in (None, "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{local_rank}"
    return device


def join() -> None:
    """The gloo process group of this run (joined once)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")


def leave() -> None:
    """Tear the group down before exit (a gloo group left alive aborts its process at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(value: Any) -> Any:
    """Process 0's ``value``, in every process."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered_groups(groups: Iterable[tuple[list[dict[str, Any]], BaseException | None]], total: int,
                    batch_size: int) -> Iterator[tuple[list[dict[str, Any]], BaseException | None]]:
    """In process 0: every process's ``(rows, error)`` groups (this process's shard of ``total``
    inputs, from :func:`reszoo.predict.predict_groups` with ``shard``), in input order; in the
    others, nothing (they send theirs). The errors travel as their messages."""
    import torch.distributed as dist

    rank, _, size = world()
    mine = iter(groups)
    batches = -(-total // batch_size)
    for first in range(0, batches, size):
        index = first + rank  # the batch this process ran in this round
        count = min(batch_size, total - index * batch_size) if index < batches else 0
        sent = []
        for _ in range(count):
            group, error = next(mine)
            sent.append((group, None if error is None else str(group[0].get("error", error))))
        received: list[Any] = [None] * size if rank == 0 else None
        dist.gather_object(sent, received, dst=0)
        if rank == 0:
            for part in received:
                for group, message in part:
                    yield group, None if message is None else InputError(message)
    if next(mine, None) is not None:  # the shard and the rounds disagree: a bug, not an input's fault
        raise RuntimeError("reszoo.distributed: a process had more row groups than its batches")


def check_inputs(total: int) -> None:
    """Every process must have listed the same inputs (the same files seen from each)."""
    import torch.distributed as dist

    rank, _, size = world()
    counts: list[Any] = [None] * size
    dist.all_gather_object(counts, total)
    if len(set(counts)) != 1:
        raise InputError(f"the processes found different numbers of inputs ({', '.join(map(str, counts))}); "
                         "every process must see the same files")
