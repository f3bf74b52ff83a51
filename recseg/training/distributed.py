"""Data-parallel training on one node (``torch.distributed``): who this process is and the few
collectives the training loop needs.

``recseg train --nproc N`` (``recseg.training.launch``) or ``torchrun`` start the processes and
set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:meth:`Dist.from_env` joins the process group (gloo on the CPU, nccl on CUDA with one device per
process: ``cuda:LOCAL_RANK``). Without those variables it is a single process and every method
is a no-op that returns its input, so one code path serves 1 and N processes.

Each process owns ``batch_size / world_size`` consecutive lanes of every step and their
recurrent state; :meth:`Dist.gather_lanes` and :meth:`Dist.my_lanes` convert between a rank's
lanes and the full state a checkpoint holds (the same as a single process's), so a checkpoint
does not depend on the number of processes.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as td

from recseg.errors import InputError
from recseg.models.state import State

# A collective waits this long for the slowest process. Rank 0 alone evaluates, logs and waits
# for a tracking server that is away; a process that fails is ended by the launcher (or
# torchrun) together with the others, so the timeout only guards against one stuck for good.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=6)
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class LeaderFailed(Exception):
    """Rank 0 failed before training started (it reports why); the other processes end."""


def launched(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is one of several that a launcher (or torchrun) started."""
    return int(environ.get("WORLD_SIZE") or 1) > 1


@dataclasses.dataclass
class Dist:
    """This process's place in a data-parallel job; the single-process default does nothing."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""  # "gloo", "nccl"; "" for a single process

    @classmethod
    def from_env(
        cls,
        device: torch.device,
        environ: Mapping[str, str] = os.environ,
        timeout: datetime.timedelta = COLLECTIVE_TIMEOUT,
    ) -> Dist:
        """Join the process group that ``environ`` describes (torchrun's variables); a
        single process on ``device`` when there is none."""
        if not launched(environ):
            return cls(device=device)
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK") or rank)
        backend = "gloo"
        if device.type == "cuda":
            if local >= torch.cuda.device_count():
                raise InputError(
                    f"process {local} of this node has no CUDA device "
                    f"({torch.cuda.device_count()} here): start at most that many processes"
                )
            device, backend = torch.device("cuda", local), "nccl"
            torch.cuda.set_device(device)
        td.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
        return cls(rank, world, local, device, backend)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        """Rank 0: the process that talks to MLflow and writes checkpoints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)``: which lanes of each step this process reads."""
        return self.rank, self.world_size

    def _comm(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` where the backend can send it (nccl: this process's GPU)."""
        return tensor.to(self.device) if self.backend == "nccl" else tensor.cpu()

    def agree(self, flag: bool) -> bool:
        """True on every process when it is True on any (all stop at the same step)."""
        if not self.distributed:
            return bool(flag)
        t = self._comm(torch.tensor([int(bool(flag))], dtype=torch.int32))
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return bool(t.item())

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over the processes (on the CPU)."""
        if not self.distributed:
            return tensor
        t = self._comm(tensor.detach().clone())
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t.cpu()

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every process (picklable; tensors travel on the CPU)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_leader else None]
        td.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def gather_lanes(self, state: State | None) -> State | None:
        """The full recurrent state (every process's lanes, in rank order) from this process's
        lanes: the state one process training all the lanes would hold."""
        if not self.distributed or not state:
            return state
        full: State = {}
        for key in sorted(state):  # the same order on every process
            value = state[key].detach()
            wide = value.float() if value.is_floating_point() else value  # gloo: no bf16
            part = self._comm(wide.contiguous())
            parts = [torch.empty_like(part) for _ in range(self.world_size)]
            td.all_gather(parts, part)
            full[key] = torch.cat(parts).to(device=value.device, dtype=value.dtype)
        return full

    def my_lanes(self, state: State | None) -> State | None:
        """This process's lanes of a full recurrent state (what :meth:`gather_lanes` made)."""
        if not self.distributed or not state:
            return state
        out: State = {}
        for key, value in state.items():
            n = value.shape[0] // self.world_size
            out[key] = value[self.rank * n : (self.rank + 1) * n]
        return out

    def own_random_stream(self, seed: int, step: int) -> None:
        """Seed torch's generators for this process alone (not rank 0, which keeps the run's
        stream and checkpoints it): the ASPP's dropout then draws other masks on each
        process, as one process does for its other lanes; deterministic per ``step``."""
        if self.rank:
            torch.manual_seed((seed * 1_000_003 + self.rank * 7_919 + step) % 2**63)

    def barrier(self) -> None:
        if self.distributed:
            td.barrier()

    def close(self) -> None:
        """Leave the process group (a no-op for a single process)."""
        if self.distributed and td.is_initialized():
            td.destroy_process_group()


class Handoff:
    """Rank 0 tells the other processes once how to start (:meth:`send`); when it fails before
    that, leaving the ``with`` block sends :data:`FAILED`, so they end instead of waiting."""

    FAILED = "recseg: rank 0 failed"

    def __init__(self, dist: Dist) -> None:
        self.dist, self.sent = dist, False

    def send(self, message: Any) -> None:
        if not self.sent:
            self.sent = True
            self.dist.broadcast_object(message)

    def __enter__(self) -> Handoff:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None and not self.sent:
            self.send(self.FAILED)

    @staticmethod
    def receive(dist: Dist) -> Any:
        """What rank 0 sent (on the other processes); ``LeaderFailed`` when it failed."""
        message = dist.broadcast_object(None)
        if message == Handoff.FAILED:
            raise LeaderFailed("rank 0 failed")
        return message
