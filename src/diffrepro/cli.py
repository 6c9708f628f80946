"""`diffrepro <stage> ...`: one subcommand per pipeline stage (the Snakemake rules and DVC stages call these).

Every stage validates params.yaml and its inputs before it writes anything, and writes each output
atomically, so a failure never leaves a half-written file or destroys an earlier result.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# OpenMP threads must sleep, not spin, when two jobs share the cores; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .stages import STAGES  # noqa: E402

LOG = logging.getLogger("diffrepro")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffrepro", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGES:
        module = importlib.import_module(f"diffrepro.stages.{name}")
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0])
        p.add_argument("--params", required=True, help="params.yaml (the whole pipeline's configuration)")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: params threads)")
        p.add_argument("--log", default=None, help="also append log lines to this file")
        module.add_arguments(p)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .runtime import setup_logging

    setup_logging(args.log)
    try:
        from .config import check_local_inputs, load_params
        from .runtime import configure_threads, pick_device

        params = load_params(args.params)
        check_local_inputs(params)
        threads = args.threads if args.threads is not None else params.threads
        if threads < 1:
            raise ValueError(f"--threads = {threads} is not allowed; it must be a whole number >= 1")
        configure_threads(threads)
        device = pick_device(params.device)
        module = importlib.import_module(f"diffrepro.stages.{args.stage}")
        LOG.info("%s on %s with %d thread(s)", args.stage, device, threads)
        module.run(args, params, device)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        LOG.error("%s", message)
        print(f"diffrepro {args.stage}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
