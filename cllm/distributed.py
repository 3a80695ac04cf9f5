"""Data-parallel training over MPI (mpi4py), and the single-process stand-in.

Under `mpirun -n N python cli.py train ...` every rank holds the whole model; each step every rank
computes gradients on its own slice of the global batch, the flat gradient buffer is averaged with
one in-place Allreduce (mpi4py's buffer interface: no pickling), and the identical AdamW step then
runs on every rank. With targets masked by -1 the mean is over the global batch's scored tokens: each
micro-batch's gradient is weighted by its count before the Allreduce (cllm/training/trainer.py's
forward_backward; every rank counts the whole global batch itself, so no extra message).
Communication per step: 4 bytes x parameters, reduced and broadcast back.
Without MPI, `SingleProcess` offers the same methods as no-ops, so the training loop has one path.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from cllm.errors import MissingDependencyError

# Environment variables that MPI launchers set in every rank (Open MPI, MPICH/Hydra, Intel MPI, Slurm's PMI)
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD")


def launched_by_mpirun() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS)


class SingleProcess:
    """One process: rank 0 of 1; every collective is the identity."""

    rank = 0
    size = 1
    local_size = 1
    local_rank = 0
    is_main = True

    def allreduce_sum_(self, array) -> None:
        pass

    def allreduce_scalar(self, value: float) -> float:
        return value

    def broadcast_(self, array) -> None:
        pass

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        sys.exit(code)


class MPIComm:
    """COMM_WORLD through mpi4py's buffer methods (upper-case: raw buffers, no pickle)."""

    def __init__(self):
        from mpi4py import MPI  # noqa: PLC0415 - optional: the mpi extra (importing it starts MPI)

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()  # ranks on this machine: they share its cores
        self.local_rank = node.Get_rank()  # this rank's number on its machine: --device cuda takes that GPU
        node.Free()
        self.is_main = self.rank == 0

    def allreduce_sum_(self, array) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def allreduce_scalar(self, value: float) -> float:
        buf = np.array([value], dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return float(buf[0])

    def broadcast_(self, array) -> None:
        self.comm.Bcast(array, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        # MPI_Abort ends every rank: the others would otherwise wait forever in the next Allreduce
        self.comm.Abort(code)


_world = None


def world():
    """The process group: MPIComm under an MPI launcher, SingleProcess otherwise."""
    global _world
    if _world is None:
        if launched_by_mpirun():
            try:
                import mpi4py  # noqa: F401, PLC0415 - optional: the mpi extra
            except ImportError as exc:
                raise MissingDependencyError(
                    "this was started by mpirun, but mpi4py is not installed; install the MPI extra "
                    "with: pip install -e '.[mpi]' (or run without mpirun for one process)") from exc
            comm = MPIComm()
            _world = comm if comm.size > 1 else SingleProcess()
        else:
            _world = SingleProcess()
    return _world
