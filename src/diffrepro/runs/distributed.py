"""Multi-process training: this process's place in its job, the job's process group, and the relaunch under torchrun.

A stage that declares a process count (pipeline.Stage.processes: the train stage's
runs.<run>.train.processes) and is asked for N > 1 starts itself again as N processes through
`torchrun --standalone --nproc_per_node N` (one machine), which gives each process RANK, LOCAL_RANK
and WORLD_SIZE. Without WORLD_SIZE a stage is one process and nothing here touches torch.distributed.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass

LOG = logging.getLogger("diffrepro")


@dataclass(frozen=True)
class Group:
    """One process's place among its job's processes (torchrun's environment)."""
    rank: int = 0                   # rank 0 logs and writes every output and the resumable state
    local_rank: int = 0             # its CUDA device on this machine
    world: int = 1                  # processes in the job
    launched: bool = False          # started by torchrun (WORLD_SIZE set), whatever the world size

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Group()


def from_env(environ=None) -> Group:
    """This process's Group from torchrun's variables; one process where WORLD_SIZE is unset."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return SINGLE
    return Group(rank=int(environ.get("RANK", 0)), local_rank=int(environ.get("LOCAL_RANK", 0)),
                 world=int(environ["WORLD_SIZE"]), launched=True)


@contextmanager
def joined(group: Group, device):
    """This process's training device, while it is in its job's process group: gloo on the CPU,
    nccl on CUDA with each process on device cuda:LOCAL_RANK. One process: `device`, no group."""
    if group.world == 1:
        yield device
        return
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if group.local_rank >= visible:
            raise RuntimeError(f"{group.world} training processes on this machine need {group.world} CUDA devices "
                               f"(one each); {visible} visible: lower train.processes to at most {visible}")
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def average(tensor, group: Group):
    """The mean of `tensor` over the job's processes (itself for one process)."""
    if group.world == 1:
        return tensor
    import torch.distributed as dist

    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / group.world


def gather(obj, group: Group) -> list:
    """Every process's `obj`, in rank order, on every process ([obj] for one process)."""
    if group.world == 1:
        return [obj]
    import torch.distributed as dist

    found = [None] * group.world
    dist.all_gather_object(found, obj)
    return found


def relaunch(argv: list, processes: int, threads: int) -> int:
    """Run `diffrepro <argv>` as `processes` processes of this Python under torchrun on this machine
    (each with threads // processes CPU threads, at least one); returns torchrun's exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
    # `--`: torchrun's own options end there, so the stage's flags (--run) are not taken for its (--run-path)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "--", "diffrepro", *argv]
    LOG.info("%d processes: torchrun --standalone --nproc_per_node %d -m diffrepro %s", processes, processes,
             " ".join(argv))
    return subprocess.run(command, env=env).returncode
