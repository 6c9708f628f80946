"""Process set-up shared by every stage: threads, device, seeds, logging to the rule's log file."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG = logging.getLogger("diffrepro")


def configure_threads(threads: int) -> None:
    """Pin torch to `threads` CPU threads; OpenMP threads sleep instead of spinning when idle.

    Two jobs of 2 spinning threads each on 2 cores slowed training 45x on the project's machines.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    # float64 Bernoulli posteriors produce subnormals that slow evaluation ~30x
    torch.set_flush_denormal(True)


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


def setup_logging(log_path=None) -> None:
    """Log to stderr and, when given, to the rule's log file (appending). A record logged with
    extra={"file_only": True} goes to the file alone (the CLI prints its error line to stderr itself)."""
    root = logging.getLogger("diffrepro")
    root.setLevel(logging.INFO)
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


def progress(iterable=None, *, total=None, desc=None, enabled=True):
    """tqdm progress bar on stderr (Snakemake shows it; the log gets periodic lines from the stage)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, mininterval=2.0, file=sys.stderr,
                dynamic_ncols=True, leave=False)
