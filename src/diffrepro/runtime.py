"""Process set-up shared by every stage: threads, device, seeds, logging to the rule's log file."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

LOG = logging.getLogger("diffrepro")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; a container's or taskset's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def set_omp_wait_policy(threads: int | None) -> str:
    """Choose how idle OpenMP threads wait between torch's parallel regions; returns the policy.

    OpenMP reads OMP_WAIT_POLICY once, when torch loads, so this runs before torch is imported.
    - A policy already in the environment is kept (the test suite's, Snakemake's, a user's).
    - A job whose threads cover every CPU it may use gets OpenMP's default (threads spin briefly,
      then sleep): it runs alone, since Snakemake counts cores and never starts a job beside one that
      holds them all, and DVC runs one stage at a time. On 2 cores with 2 threads, the digits U-Net's
      forward took 22-27 ms against 40 ms with PASSIVE (docs/benchmarks.md).
    - Fewer threads than CPUs, or not known: PASSIVE (threads sleep at once), since other jobs may
      share the cores, and two jobs of 2 spinning threads each on 2 cores slowed training 45x.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"].lower()
    if passive_wait(threads):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "passive"
    return "default"


def passive_wait(threads: int | None) -> bool:
    """set_omp_wait_policy's rule where the environment sets none: PASSIVE for a job of fewer threads
    than CPUs, or of threads not known."""
    return threads is None or threads < usable_cpus()


def threads_from_argv(argv) -> int | None:
    """The value of `--threads N` / `--threads=N` in a command line, before it is parsed (None when
    absent or not a whole number: the parser reports that)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else \
            arg.partition("=")[2] if arg.startswith("--threads=") else None
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def configure_threads(threads: int, torch_too: bool = True) -> None:
    """Pin torch to `threads` CPU threads (the OpenMP wait policy: set_omp_wait_policy, decided
    before torch loaded; here only for a caller that has not yet imported it).

    torch_too=False (a stage that computes without torch): only the environment is set, which torch
    reads should it be imported later, and torch's import (a second or more of start-up) is spared.
    """
    if "torch" not in sys.modules:
        set_omp_wait_policy(threads)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if not torch_too and "torch" not in sys.modules:
        return
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    # float64 Bernoulli posteriors produce subnormals that slow evaluation ~30x
    torch.set_flush_denormal(True)
    keep_freed_memory()


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Let freed heap memory serve the next allocation instead of going back to the kernel.

    torch's CPU tensors come from malloc. glibc serves a block above its mmap threshold (128 KiB at
    first, raised as such blocks are freed) with fresh pages and trims the heap's free top above
    twice that threshold, so a step can page-fault its activations and gradients anew. With the
    threshold at glibc's maximum (32 MiB) and trimming from 1 GiB (one thread of an AMD EPYC,
    docs/benchmarks.md, issue 21): the dead-leaves net's forward+backward, in a loop of its own,
    faults 2-700 times in 10 passes instead of 44,000-71,000, and its training step takes 39-40 ms
    instead of 47-49; in the
    pipeline's jobs, where earlier frees have already raised the threshold, train@deadleaves-sd
    faults 130,000 times instead of 600,000 (65.3 against 69.4 s) and sample@deadleaves-sd 92,000
    instead of 0.5-2.0 million (14.6-15.1 against 15.2-18.7 s); nll is unchanged. The resident
    peak stays the same there. glibc only, and never where the environment sets malloc's own
    tunables; returns whether set."""
    if any(name in os.environ for name in _MALLOC_ENV):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, musl, Windows)
        return False
    import ctypes

    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def device_kind(device) -> str:
    """"cpu", "cuda", ... of a torch.device or its name ("cpu", "cuda:0")."""
    return getattr(device, "type", str(device).split(":")[0])


def uses_channels_last(device, data_rank: int, bf16: bool = False) -> bool:
    """Whether an image network runs in channels_last (NHWC): training (runs/training.py),
    evaluation (TrainedRun.open, fp32) and the sampler under bf16 (sampling.for_sampling) ask here.
    On CUDA always; on the CPU in fp32, where oneDNN's NHWC convolutions are faster (forward+backward
    of SD-2015's multi-scale nets 1.3x for digits, 1.65x for dead leaves, the digits U-Net 1.1x;
    forward alone 1.1-1.5x); under bf16 autocast on the CPU the GroupNorms of NHWC bf16 activations
    are so slow that the U-Net's step doubles (docs/benchmarks.md). device: a torch.device or its
    name ("cpu", "cuda:0")."""
    return data_rank == 3 and (device_kind(device) == "cuda" or not bf16)


DEVICES = ("auto", "cpu", "cuda")  # params `device`


def pick_device(preference: str = "auto"):
    """CUDA when present (or asked for), CPU otherwise."""
    import torch

    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("params device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def derive_seed(seed: int, *names: str) -> int:
    """A stable per-stage/per-run seed from the global one (independent of Python's hash salt)."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % 2**31


# Set by the warm interpreter (diffrepro.warm, through cli.main): in a job it runs, the start of the
# job's command (epoch seconds); in a job it did not run although DIFFREPRO_WARM named it, why not
JOB_STARTED: float | None = None
WARM_MISSED: str | None = None


def process_age_seconds() -> float | None:
    """Seconds since this process started (Linux: /proc; elsewhere None)."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])  # starttime, field 22
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def process_age() -> str:
    """Seconds since the job's command started, as "1.23 s" ("n/a" where unknown): the start-up a
    job pays before its stage begins work (the interpreter, the imports, the params checks), marked
    "(warm)" when the warm interpreter ran it. benchmarks/pipeline_time.py reads it from the rule logs."""
    if JOB_STARTED is not None:
        return f"{max(0.0, time.time() - JOB_STARTED):.2f} s (warm)"
    age = process_age_seconds()
    return ("n/a" if age is None else f"{age:.2f} s") + (f" (not warm: {WARM_MISSED})" if WARM_MISSED else "")


def setup_logging(log_path=None) -> None:
    """Log to stderr and, when given, to the rule's log file (appending). A record logged with
    extra={"file_only": True} goes to the file alone (the CLI prints its error line to stderr itself)."""
    root = logging.getLogger("diffrepro")
    root.setLevel(logging.INFO)
    for handler in root.handlers:  # a second call in one process: the last call's log file is closed
        handler.close()
    root.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.addFilter(lambda record: not getattr(record, "file_only", False))
    root.addHandler(err)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, mode="a")
        fh.setFormatter(fmt)
        root.addHandler(fh)


class ChunkClock:
    """One log line per finished chunk of a long job, with its rate and the time left:
    "<what>: chunk 3/10, 1500 samples in 42.0 s (35.7 samples/s), ETA 0:04:54"."""

    def __init__(self, what: str, chunks: int, unit: str):
        import time

        self.what, self.chunks, self.unit, self.count, self.items = what, chunks, unit, 0, 0
        self.start = time.perf_counter()

    def done(self, items: int) -> None:
        import time

        self.count += 1
        self.items += items
        spent = time.perf_counter() - self.start
        left = spent / self.count * (self.chunks - self.count)
        LOG.info("%s: chunk %d/%d, %d %s in %.1f s (%.1f %s/s), ETA %d:%02d:%02d", self.what, self.count,
                 self.chunks, self.items, self.unit, spent, self.items / max(spent, 1e-9), self.unit,
                 left // 3600, left % 3600 // 60, left % 60)


PROGRESS_MODES = ("bar", "lines", "off")  # env DIFFREPRO_PROGRESS


def progress_mode() -> str:
    """How long work shows its progress on stderr: a live bar where a person watches one job
    (stderr is a terminal), whole lines where several jobs share a terminal or stderr is a file
    (Snakemake running jobs side by side sets DIFFREPRO_PROGRESS=lines), or nothing."""
    mode = os.environ.get("DIFFREPRO_PROGRESS", "")
    if mode in PROGRESS_MODES:
        return mode
    return "bar" if sys.stderr.isatty() else "lines"


def progress(iterable=None, *, total=None, desc=None, enabled=True, unit="it"):
    """A progress bar on stderr: tqdm's bar, or (progress_mode "lines") one whole line per 10% or
    30 s, so that two jobs writing to one terminal never garble each other's bars."""
    from tqdm.auto import tqdm

    mode = progress_mode() if enabled else "off"
    cls = _line_bar_class() if mode == "lines" else tqdm
    return cls(iterable, total=total, desc=desc, disable=mode == "off", mininterval=2.0, file=sys.stderr,
               dynamic_ncols=mode == "bar", leave=False, unit=unit)


_LINE_BAR = None


def _line_bar_class():
    """tqdm that prints a whole line (no carriage return) every 10% of the total or 30 s, and at the end."""
    global _LINE_BAR
    if _LINE_BAR is None:
        import time

        from tqdm.auto import tqdm

        class LineBar(tqdm):
            def display(self, msg=None, pos=None):
                now, n = time.monotonic(), self.n
                last = getattr(self, "_line_at", None)
                step = (self.total or 0) / 10
                if last is not None and n == last[1]:
                    return True
                if last is None or n >= (self.total or float("inf")) or now - last[0] >= 30 or (
                        step and n - last[1] >= step):
                    self._line_at = (now, n)
                    self.fp.write(self.format_meter(**self.format_dict).strip() + "\n")
                    self.fp.flush()
                return True

        _LINE_BAR = LineBar
    return _LINE_BAR


# ---- one GPU per job on a machine with several ------------------------------------------------------

GPU_POOL_ENV = "DIFFREPRO_GPUS"            # the devices jobs share, e.g. "0,1,2,3" (default: the visible ones)
GPU_LOCKS_ENV = "DIFFREPRO_GPU_LOCKS"      # the folder of the per-device lock files (default: the temp dir's)
_CLAIMED = "DIFFREPRO_GPUS_CLAIMED"         # set once a job holds its devices (torchrun's children inherit)
_HELD: list = []                           # the open lock files: held until this process ends


def gpu_pool() -> list:
    """The devices jobs on this machine share: DIFFREPRO_GPUS, else CUDA_VISIBLE_DEVICES, else the GPUs
    nvidia-smi lists; [] when there are none. Read without initialising CUDA (it must not have chosen
    a device before a job sets CUDA_VISIBLE_DEVICES)."""
    for name in (GPU_POOL_ENV, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(name)
        if value is not None:
            return [d.strip() for d in value.split(",") if d.strip()]
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def claim_gpus(count: int, pool: list | None = None, lock_dir=None, poll_s: float = 0.2) -> list | None:
    """Give this job `count` devices of its own from the pool (gpu_pool()) by holding one lock file per
    device (fcntl.flock, released when the process ends, even killed), waiting while all are held, and
    set CUDA_VISIBLE_DEVICES to them before CUDA starts. None (nothing changed): a job holding no GPU
    (count 0: it sees every device and uses the first, as on a one-GPU machine, rather than fall back
    to the CPU), a pool of one device or none, a SLURM job (SLURM assigns devices), or devices already
    claimed for this job (a torchrun child). Snakemake's `--resources gpu=N` caps how many devices
    running jobs hold, so with N = the pool's size a job waits here only briefly, if at all."""
    import fcntl
    import tempfile
    import time

    pool = gpu_pool() if pool is None else [str(d) for d in pool]
    if os.environ.get(_CLAIMED) or os.environ.get("SLURM_JOB_ID") or len(pool) <= 1:
        return None  # (SLURM gives each job and node its own devices)
    if count <= 0:
        return None
    if count > len(pool):
        raise ValueError(f"a job holding gpu = {count} needs {count} devices; the pool has {len(pool)} "
                         f"({','.join(pool)}); allowed: gpu <= {len(pool)}")
    folder = Path(lock_dir or os.environ.get(GPU_LOCKS_ENV) or Path(tempfile.gettempdir()) / "diffrepro-gpu-locks")
    folder.mkdir(parents=True, exist_ok=True)
    held = []
    while True:
        for device in pool:
            if len(held) == count:
                break
            handle = open(folder / f"gpu-{device}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            held.append((device, handle))
        if len(held) == count:
            break
        for _, handle in held:  # never sit on part of a request while waiting for the rest
            handle.close()
        held = []
        time.sleep(poll_s)
    _HELD.extend(handle for _, handle in held)
    devices = [device for device, _ in held]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    os.environ[_CLAIMED] = ",".join(devices)
    return devices
