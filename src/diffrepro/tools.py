"""`diffrepro <tool>`: the commands beside the pipeline stages (they build or read the pipeline,
they are not stages of it). Each has `HELP`, `add_arguments(parser)` and `run(args) -> exit code`."""
from __future__ import annotations

import sys

from .warm import WarmTool


class DvcYaml:
    HELP = "print dvc.yaml generated from the pipeline declaration (src/diffrepro/wiring/pipeline.py)"

    @staticmethod
    def add_arguments(p):
        pass

    @staticmethod
    def run(args) -> int:
        from .wiring.engines import render_dvc_yaml

        sys.stdout.write(render_dvc_yaml())
        return 0


class Sync:
    HELP = "after `dvc repro` (or `snakemake`): record the built outputs in the other engine's state"

    @staticmethod
    def add_arguments(p):
        pass

    @staticmethod
    def run(args) -> int:
        from .wiring.sync import SyncError, sync

        try:
            print(f"diffrepro sync: {sync('.')}")
        except SyncError as exc:
            print(f"diffrepro sync: error: {exc}", file=sys.stderr)
            return 2
        return 0


class Compare:
    HELP = "one table of every run across the workspace, git revisions and DVC experiments"

    @staticmethod
    def add_arguments(p):
        from .tables.compare import FORMATS

        p.add_argument("--rev", action="append", default=[], metavar="REV",
                       help="also a git revision's committed params and metrics (repeatable)")
        exps = p.add_mutually_exclusive_group()
        exps.add_argument("--exp", dest="exps", action="store_true", default=None,
                          help="include HEAD's DVC experiments (the default when there are any)")
        exps.add_argument("--no-exp", dest="exps", action="store_false", help="leave DVC experiments out")
        p.add_argument("--no-workspace", action="store_true", help="leave the workspace's results out")
        p.add_argument("--format", default="md", choices=FORMATS, help="markdown (default), csv or html")
        p.add_argument("--out", default=None, help="write the table here (default: standard output)")
        p.add_argument("--plots", default=None, metavar="DIR",
                       help="also write comparison pictures (bound terms, FID against steps, sample grids) here")

    @staticmethod
    def run(args) -> int:
        from .tables.compare import CompareError, gather, render, table

        try:
            rows = gather(".", revs=args.rev, exps=args.exps, include_workspace=not args.no_workspace)
            if not rows:
                raise CompareError("nothing to compare: no runs in the chosen sources")
            text = render(table(rows), args.format)
            if args.plots:
                from .tables.compare_plots import write_plots

                for path in write_plots(rows, args.plots):
                    print(f"diffrepro compare: wrote {path}", file=sys.stderr)
        except CompareError as exc:
            print(f"diffrepro compare: error: {exc}", file=sys.stderr)
            return 2
        if args.out:
            from .io import save_text

            save_text(args.out, text)
        else:
            sys.stdout.write(text)
        return 0


class Export:
    HELP = "a trained run's model out of the project: a diffusers DDPMPipeline folder, or safetensors + JSON"

    @staticmethod
    def add_arguments(p):
        p.add_argument("--format", required=True, choices=("diffusers", "safetensors"),
                       help="diffusers: a save_pretrained folder (unet/, scheduler/) DDPMPipeline loads; "
                            "safetensors: the EMA weights with the run's config (no pickle), a file plus a .json")
        p.add_argument("--model", required=True, help="a run's model.pt (results/runs/<run>/model.pt)")
        p.add_argument("--out", required=True, help="the folder (diffusers) or .safetensors file to write")

    @staticmethod
    def run(args) -> int:
        from .io import InputError

        try:
            if args.format == "diffusers":
                from .interop.diffusers import export

                notes = export(args.model, args.out)
            else:
                from .interop.safetensors import export

                notes = export(args.model, args.out)
        except InputError as exc:
            print(f"diffrepro export: error: {exc}", file=sys.stderr)
            return 2
        for note in notes:
            print(f"diffrepro export: note: {note}", file=sys.stderr)
        print(f"diffrepro export: wrote {args.out}", file=sys.stderr)
        return 0


class Generate:
    HELP = "N samples of a trained model as PNGs and one samples.npz (arr_0: uint8 NHWC), no params file needed"

    @staticmethod
    def add_arguments(p):
        p.add_argument("--model", required=True, help="a model.pt or .safetensors (its config is inside)")
        p.add_argument("--n", required=True, type=int, help="how many samples")
        p.add_argument("--out", required=True, help="folder for 000000.png ... and samples.npz")
        p.add_argument("--sampler", default="ancestral", choices=("ancestral", "ddim"))
        p.add_argument("--steps", type=int, default=None, help="reverse steps (respaced); default: all T")
        p.add_argument("--eta", type=float, default=0.0, help="DDIM's η (0: deterministic)")
        p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"),
                       help="the network's autocast while sampling; default: the checkpoint's sample.precision "
                            "(auto: the precision it trained at)")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")

    @staticmethod
    def run(args) -> int:
        from .io import InputError
        from .runs.generate import generate

        try:
            path = generate(args.model, args.n, args.out, sampler=args.sampler, steps=args.steps, eta=args.eta,
                            precision=args.precision, batch_size=args.batch_size, seed=args.seed, device=args.device,
                            threads=args.threads)
        except (InputError, ValueError) as exc:
            print(f"diffrepro generate: error: {exc}", file=sys.stderr)
            return 2
        print(f"diffrepro generate: wrote {args.n} samples to {path}", file=sys.stderr)
        return 0


TOOLS = {"dvc-yaml": DvcYaml, "sync": Sync, "compare": Compare, "export": Export, "generate": Generate}


class ReadmeFigures:
    HELP = "rewrite the README's table of figures from a pipeline's results/metrics.csv (--check: only compare)"

    @staticmethod
    def add_arguments(p):
        from .tables.readme import SNAPSHOT

        p.add_argument("--metrics", default=None,
                       help=f"a pipeline's metrics.csv (default: the committed snapshot {SNAPSHOT})")
        p.add_argument("--params", default="params.yaml", help="the params the pipeline ran on")
        p.add_argument("--readme", default="README.md")
        p.add_argument("--check", action="store_true", help="exit 2 when the README differs, change nothing")

    @staticmethod
    def run(args) -> int:
        import shutil

        import pandas as pd

        from .config import ParamsError, load_params
        from .io import save_text
        from .tables.readme import SNAPSHOT, current_block, render_table, replace_block

        try:
            params = load_params(args.params)
            source = args.metrics or SNAPSHOT
            frame = pd.read_csv(source)
            block = render_table(frame, params)
            text = open(args.readme).read()
            if args.check:
                if current_block(text) != block:
                    print(f"diffrepro readme-figures: {args.readme}'s table differs from {source}; "
                          "run `diffrepro readme-figures`", file=sys.stderr)
                    return 2
                return 0
            if args.metrics and args.metrics != SNAPSHOT:
                shutil.copyfile(args.metrics, SNAPSHOT)
            save_text(args.readme, replace_block(text, block))
        except (OSError, ValueError, ParamsError) as exc:
            print(f"diffrepro readme-figures: error: {exc}", file=sys.stderr)
            return 2
        return 0


TOOLS["readme-figures"] = ReadmeFigures

TOOLS["warm"] = WarmTool
