"""`diffrepro <stage> ...`: one subcommand per pipeline stage (the Snakemake rules and DVC stages call these).

Every stage validates params.yaml and its inputs before it writes anything, and writes each output
atomically, so a failure never leaves a half-written file or destroys an earlier result.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

from .runtime import set_omp_wait_policy, threads_from_argv

# OpenMP reads its wait policy when torch loads, and a stage's module may import torch when the
# parser is built: decided first, from the job's --threads (runtime.set_omp_wait_policy)
OMP_WAIT = set_omp_wait_policy(threads_from_argv(sys.argv[1:]))

from .wiring import pipeline  # noqa: E402
from .wiring.pipeline import Collect  # noqa: E402

LOG = logging.getLogger("diffrepro")
from .tools import TOOLS  # noqa: E402


def add_stage_arguments(p: argparse.ArgumentParser, st: pipeline.Stage) -> None:
    """One flag per wildcard, input and output of the declared stage (all required)."""
    p.add_argument("--params", required=True, help="params.yaml (the whole pipeline's configuration)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of the job, shared by its processes "
                   "(default: params threads)")
    p.add_argument("--log", default=None, help="also append log lines to this file")
    if st.wildcard:
        p.add_argument(f"--{st.wildcard}", required=True, help=f"{st.wildcard} name under params {st.wildcard}s")
    for inp in st.inputs:
        what = (f"folder holding every run's {', '.join(f'{s}.{o}' for s, o in inp.outputs)}"
                if isinstance(inp, Collect) else f"input: the {inp.stage} stage's {inp.output} "
                f"({pipeline.producer(inp).path})")
        p.add_argument("--" + inp.name.replace("_", "-"), dest=inp.name, required=True, help=what)
    for out in st.outputs:  # a sharded stage's scatter job (--shard) writes its shard file instead
        p.add_argument("--" + out.name.replace("_", "-"), dest=out.name, required=st.shards is None,
                       help=f"output ({out.path})" + ("; required unless --shard" if st.shards else ""))
    if st.shards is not None:
        p.add_argument("--shard", type=int, default=None, help=f"scatter: compute shard K of {st.shards.key} into "
                       "--shard-file and nothing else (Snakemake's rule " + st.name + "_shard)")
        p.add_argument("--shard-file", default=None, help="scatter: the shard file to write")


def shard_arguments(st: pipeline.Stage, args, raw: dict, key: str | None) -> None:
    """A sharded stage's job is a scatter job (--shard and --shard-file, no outputs) or the gather,
    which writes every output and is told where the shard files lie (args.shard_files)."""
    from .runs.shards import shard_file
    from .wiring import engines

    if st.shards is None:
        return
    if args.shard is None:
        missing = [out.name for out in st.outputs if getattr(args, out.name) is None]
        if args.shard_file is not None or missing:
            raise ValueError(f"diffrepro {st.name} needs every output flag (missing: --"
                             f"{', --'.join(m.replace('_', '-') for m in missing) or 'none'}) or, for one shard, "
                             f"--shard K with --shard-file PATH; --shard-file alone is not allowed")
    shards = engines.job_shards(st, raw, key)
    if args.shard is None:
        beside = getattr(args, st.shards.beside)
        args.shard_files = [shard_file(beside, st.name, k, shards) for k in range(shards)]
    elif not 0 <= args.shard < shards:
        raise ValueError(f"--shard {args.shard} is not a shard of {pipeline.fill(st.shards.key, **{st.wildcard: key})}"
                         f" = {shards}; allowed: 0 to {shards - 1}")
    elif args.shard_file is None:
        raise ValueError(f"diffrepro {st.name} --shard {args.shard} needs --shard-file PATH (where the shard goes)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; `only` (a stage's name): that stage's subcommand alone, so a job
    imports its own stage's code and no other's (every job pays its imports at start-up)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="diffrepro", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"diffrepro {__version__}")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for st in pipeline.STAGES:
        if only is not None and st.name != only:
            continue
        module = importlib.import_module(st.module)
        p = sub.add_parser(st.name, help=module.__doc__.splitlines()[0])
        add_stage_arguments(p, st)
        if hasattr(module, "add_arguments"):  # options of the stage's own beyond its declared paths
            module.add_arguments(p)
    for name, tool in TOOLS.items():
        if only is None:
            tool.add_arguments(sub.add_parser(name, help=tool.HELP))
    return parser


def _claim_devices(st, params) -> None:
    """On a machine with several GPUs, the devices this job holds (its `gpu` resource) become its own
    (runtime.claim_gpus): jobs running at once never share one. Logged with the time it is released."""
    import atexit

    from .runtime import claim_gpus, gpu_pool
    from .wiring import engines

    pool = gpu_pool()
    claimed = claim_gpus(engines.snakemake_resources(st, params)["gpu"], pool)
    if claimed is None:
        return
    held = f"GPU {','.join(claimed)}"
    LOG.info("GPU pool %s: this job holds %s from %.3f (epoch s)", ",".join(pool), held, time.time())
    atexit.register(lambda: LOG.info("GPU pool: this job releases %s at %.3f (epoch s)", held, time.time()))


def main(argv=None) -> int:
    """`diffrepro ARGV` (default: this process's command line). A stage run as a command (no `argv`)
    goes to the warm interpreter when one is running for it (diffrepro.warm), else runs here."""
    if argv is None and sys.argv[1:2] and sys.argv[1] in pipeline.STAGE_NAMES:
        from . import runtime, warm

        code = warm.delegate(sys.argv[1:])
        if code is not None:
            return code
        runtime.WARM_MISSED = warm.MISSED  # said in the log beside the start-up
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    only = argv[0] if argv and argv[0] in pipeline.STAGE_NAMES else None
    args = build_parser(only).parse_args(argv)
    if args.stage in TOOLS:
        return TOOLS[args.stage].run(args)
    from .runs import distributed
    from .runtime import setup_logging

    group = distributed.from_env()  # one process, or one of a job's processes under torchrun
    setup_logging(args.log if group.main else None)
    if not group.main:  # rank 0 logs for the job; the others say only what goes wrong
        LOG.setLevel(logging.WARNING)
    try:
        from .config import parse_params, read_params
        from .runtime import configure_threads, pick_device
        from .wiring import engines
        from .wiring.checks import check_local_inputs

        raw = read_params(args.params)
        params = parse_params(raw, source=str(args.params))
        check_local_inputs(params)
        threads = args.threads if args.threads is not None else params.threads
        if threads < 1:
            raise ValueError(f"--threads = {threads} is not allowed; it must be a whole number >= 1")
        st = pipeline.stage(args.stage)
        if group.world > 1 and st.processes is None:
            raise ValueError(f"stage {st.name} runs in one process, not under torchrun (WORLD_SIZE = {group.world}); "
                             f"allowed under torchrun: {', '.join(s.name for s in pipeline.STAGES if s.processes)}")
        key = getattr(args, st.wildcard) if st.wildcard else None
        processes, nodes = engines.job_processes(st, raw, key), engines.job_nodes(st, raw, key)
        shard_arguments(st, args, raw, key)
        _claim_devices(st, params)
        if (processes > 1 or nodes > 1) and not group.launched:  # the same command again, as its processes
            return distributed.relaunch(argv, processes, threads, nodes)
        threads = max(1, threads // group.world)  # --threads is the job's, shared by its processes
        module = importlib.import_module(st.module)
        uses_torch = getattr(module, "USES_TORCH", True)  # a numpy/pandas stage: no torch, no device
        configure_threads(threads, torch_too=uses_torch)
        device = pick_device(params.device) if uses_torch else None
        from .runtime import process_age

        LOG.info("%s on %s with %d thread(s)%s%s, start-up %s", args.stage, device or "cpu (numpy)", threads,
                 f" in each of {group.world} processes" if group.world > 1 else "",
                 f" (OpenMP wait: {OMP_WAIT})" if uses_torch and threads > 1 else "", process_age())
        module.run(args, params, device)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        LOG.error("%s", message, extra={"file_only": True})  # the rule's log keeps it; stderr gets one line
        print(f"diffrepro {args.stage}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
