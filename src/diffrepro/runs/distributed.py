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


RDZV_PORT = 29500  # torchrun's rendezvous port on the first node (plus the job id mod 1000: jobs sharing a node)


def launch_command(argv: list, processes: int, nodes: int = 1, environ=None) -> list:
    """The command that runs `diffrepro <argv>` as `processes` processes per machine on `nodes` machines:
    torchrun --standalone on this one; on several, srun starting one torchrun per node of this SLURM
    allocation, meeting at this node (the first: where the job's command runs) by c10d rendezvous.
    ValueError (one line) when several nodes are asked for outside an allocation big enough."""
    environ = os.environ if environ is None else environ
    # `--`: torchrun's own options end there, so the stage's flags (--run) are not taken for its (--run-path)
    tail = [f"--nproc_per_node={processes}", "-m", "--", "diffrepro", *argv]
    if nodes == 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", *tail]
    job = environ.get("SLURM_JOB_ID")
    if job is None:
        raise ValueError(f"train.nodes = {nodes} runs one training over {nodes} machines of a SLURM allocation, and "
                         f"this job is not in one (no SLURM_JOB_ID): run it through `snakemake --profile "
                         f"workflow/profiles/slurm`, or set train.nodes: 1 (train.processes for one machine)")
    have = int(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or 1)
    if have < nodes:
        raise ValueError(f"train.nodes = {nodes}, but SLURM job {job} holds {have} node(s); allowed: "
                         f"train.nodes <= {have} (the profile asks sbatch for --nodes=train.nodes)")
    import socket

    endpoint = f"{socket.gethostname()}:{RDZV_PORT + int(job) % 1000 if job.isdigit() else RDZV_PORT}"
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}", f"--rdzv_id={job}", *tail]


def relaunch(argv: list, processes: int, threads: int, nodes: int = 1) -> int:
    """Run `diffrepro <argv>` as `processes` processes of this Python per machine under torchrun, on this
    machine or on `nodes` of a SLURM allocation (each process with threads // processes CPU threads, at
    least one); returns the launcher's exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
    command = launch_command(argv, processes, nodes)
    LOG.info("%d process(es) on each of %d machine(s): %s", processes, nodes,
             " ".join(c if c != sys.executable else "python" for c in command))
    return subprocess.run(command, env=env).returncode
