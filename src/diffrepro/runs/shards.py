"""Scatter and gather: a run's sampling or bound split into K jobs whose gathered result is
byte-identical to one job's.

The unit is the batch. Batch j of a loop draws its random numbers from its own generator, seeded
from the stage's seed and j (`batch_generator`), so what batch j computes depends neither on which
job computes it nor on what ran before it. Shard k of K is the batches [k·B/K, (k+1)·B/K) of the B
batches (`Batches.shard`); a scatter job writes its batches' results to one shard file
(`shard_file`, beside the stage's main output, in a `shards/` folder), and the gather (the stage's
own job) reads every shard file whose digest matches, computes what is missing or stale itself, and
writes the stage's outputs from the batches in order. With K = 1, or under DVC (one job per stage),
the stage computes every batch itself: the same numbers, in one process. The batches of one job are
resumable one by one (resume.Parts), so a killed shard redoes only its unfinished batches.

Byte-identity holds on one device type with one thread count (a float sum's order may differ with
the number of threads); the digest names the device type, and a shard from another is recomputed.

Kept torch-free at import: the wiring asks `shard_file` for the Snakemake rule's output pattern.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger("diffrepro.runs.shards")


@dataclass(frozen=True)
class Batches:
    """n items in batches of `batch_size`, split over `shards` jobs."""
    n: int
    batch_size: int
    shards: int = 1

    @property
    def count(self) -> int:
        return -(-self.n // self.batch_size)

    def bounds(self, j: int) -> tuple:
        """Items [start, stop) of batch j."""
        return j * self.batch_size, min(self.n, (j + 1) * self.batch_size)

    def size(self, j: int) -> int:
        start, stop = self.bounds(j)
        return stop - start

    def shard(self, k: int) -> list:
        """The batch indices of shard k: contiguous, the K shards differ by at most one batch."""
        return list(range(k * self.count // self.shards, (k + 1) * self.count // self.shards))

    def check(self, where: str) -> None:
        """Every shard holds at least one batch (ValueError naming `where`, the shard count's key)."""
        if self.shards > self.count:
            raise ValueError(
                f"{where} = {self.shards} is more than the {self.count} batch(es) of {self.n} items at batch size "
                f"{self.batch_size}: a shard is whole batches; allowed: 1 to {self.count}, or a smaller batch size")


def shard_file(output, stage: str, shard, shards) -> str:
    """Where shard `shard` of `shards` of `stage` lies: `shards/<stage>-<k>-of-<K>.pt` beside the
    stage's main output. With the output's template and "{shard}", "{shards}": Snakemake's pattern."""
    return str(Path(output).parent / "shards" / f"{stage}-{shard}-of-{shards}.pt")


def batch_generator(seed: int, index: int, device):
    """The generator of batch `index` of a loop seeded `seed` (one per batch: see the module's doc)."""
    import torch

    from ..runtime import derive_seed

    return torch.Generator(device=device).manual_seed(derive_seed(seed, "batch", str(index)))


def save_shard(path, key: str, shard: int, shards: int, results: dict) -> None:
    """One scatter job's result: {batch index: payload} with the digest of what it depends on."""
    from ..io import save_torch

    save_torch(path, {"digest": key, "shard": shard, "shards": shards, "batches": results})


def load_shard(path, key: str, indices: list) -> dict | None:
    """{batch index: payload} of a shard file holding exactly `indices` under digest `key`; None
    (logged) where it is missing, unreadable, of other settings, model or data, or other batches."""
    from ..io import InputError, load_torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        found = load_torch(path, "shard file")  # tensors and plain values only: never runs code
    except InputError as exc:
        LOG.warning("%s; computing its batches here", exc)
        return None
    if not isinstance(found, dict) or found.get("digest") != key:
        LOG.info("%s belongs to other settings, a model or data; computing its batches here", path)
        return None
    batches = found.get("batches")
    if not isinstance(batches, dict) or sorted(batches) != list(indices):
        LOG.info("%s holds other batches than %s; computing them here", path, indices)
        return None
    return batches


def scatter(shard: int, path, batches: Batches, key: str, compute) -> None:
    """Shard `shard`'s batches, computed by `compute(indices, parts)` ({index: payload}, resumable
    through `parts`, a resume.Parts beside the shard file), into the shard file `path`."""
    from .resume import Parts

    parts = Parts(Path(path).with_suffix(".parts"), key)
    save_shard(path, key, shard, batches.shards, compute(batches.shard(shard), parts))
    parts.clear()
    LOG.info("shard %d of %d: batches %s written to %s", shard, batches.shards, batches.shard(shard), path)


def gather(batches: Batches, key: str, shard_path, compute) -> dict:
    """{batch index: payload} of every batch, in order: from the shard files (`shard_path(k)`) that
    match `key`, the rest computed here by `compute(indices)` ({index: payload})."""
    results, missing = {}, []
    if batches.shards > 1:
        for k in range(batches.shards):
            got = load_shard(shard_path(k), key, batches.shard(k))
            if got is None:
                missing += batches.shard(k)
            else:
                results.update(got)
        LOG.info("gathered %d of %d shard(s) from their files; %d batch(es) computed here",
                 batches.shards - len({k for k in range(batches.shards) if batches.shard(k)[0] in missing}),
                 batches.shards, len(missing))
    else:
        missing = list(range(batches.count))
    if missing:
        results.update(compute(missing))
    return {j: results[j] for j in range(batches.count)}
