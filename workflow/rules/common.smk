# Set-up shared by every rule: one params file, validated once; run/dataset lookups; environment.
import os
import re
import sys

from snakemake.utils import min_version

from diffrepro.wiring import checks, engines
from diffrepro.config import ParamsError, parse_params, read_params
from diffrepro.io import InputError

min_version("9.0")

# Jobs find the `diffrepro` command of the Python that runs Snakemake.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

# The stages read exactly one params file, so `--configfile X` replaces params.yaml instead of
# being merged into it.
_cli_configfiles = [os.path.relpath(p) for p in workflow.overwrite_configfiles]
if len(_cli_configfiles) > 1:
    raise ValueError(f"give one --configfile (the stages read one params file); got {', '.join(_cli_configfiles)}")
PARAMS_FILE = _cli_configfiles[0] if _cli_configfiles else "params.yaml"

# `--config KEY=VALUE` would change what Snakemake sees but not the params file the stages (and DVC)
# read, so a result would silently disagree with its params: refused in one line instead.
if workflow.config_settings.config:
    _keys = ", ".join(f"{k}={v!r}" for k, v in workflow.config_settings.config.items())
    print(f"diffrepro: error: --config {_keys} is not used: every stage reads one params file ({PARAMS_FILE}); "
          f"edit it, give another with --configfile FILE, or use `dvc exp run -S KEY=VALUE`", file=sys.stderr)
    sys.exit(1)

try:  # YAML, the schema (workflow/schemas/params.schema.json), cross-references, per-family options, local inputs
    _raw = read_params(PARAMS_FILE)
    PARAMS = parse_params(_raw, source=PARAMS_FILE)
    checks.check_local_inputs(PARAMS)  # local data roots / weights / data files hold what they should
    checks.check_existing_checkpoints(_raw)  # a run's model.pt on disk is that run's, and readable
    checks.check_init_sources(_raw)  # train.init_from: the model.pt it names is on disk
except (ParamsError, InputError) as exc:  # one line naming the key or file, not a stack: nothing has run yet
    print(f"diffrepro: error: {exc}", file=sys.stderr)
    sys.exit(1)
config.clear()
config.update(_raw)

THREADS = PARAMS.threads

# Several jobs at once share one terminal: their progress is whole lines (one per 10% or 30 s, each
# naming its job) instead of live bars that would overwrite each other; the rule logs get lines too.
try:
    _jobs_at_once = (workflow.global_resources["_cores"].value or 1) // max(THREADS, 1)
except (KeyError, AttributeError, TypeError):
    _jobs_at_once = 1
if _jobs_at_once > 1:
    os.environ.setdefault("DIFFREPRO_PROGRESS", "lines")
    # jobs share the cores: their OpenMP threads sleep between torch's parallel regions instead of
    # spinning (two jobs of 2 spinning threads on 2 cores: training 45x slower). One job at a time
    # (its threads hold every core): each job chooses (runtime.set_omp_wait_policy).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
RUNS = list(PARAMS.runs)
DATASETS = list(PARAMS.datasets)


wildcard_constraints:
    run="|".join(re.escape(r) for r in RUNS),
    dataset="|".join(re.escape(d) for d in DATASETS),


def run_priority(wildcards):
    """Schedule the long jobs first: image runs (the U-Nets) before vector ones, then by
    optimiser work, so on two cores the longest chain starts at once instead of last."""
    run = PARAMS.runs[wildcards.run]
    image = run.dataset.data_type == "image"
    return (100 if image else 0) + run.train.steps * run.train.batch_size / 1e6


def dataset_priority(wildcards):
    return 100 if PARAMS.datasets[wildcards.dataset].data_type == "image" else 0


# The jobs run as forks of one process that has imported torch (diffrepro.warm): about 1.4 s less
# start-up per job. Local execution only (a cluster's jobs run elsewhere); DIFFREPRO_WARM=off turns
# it off, and one the caller started (the test suite's, `diffrepro warm`) is used instead.
WARM = []


onstart:
    from diffrepro import warm

    if workflow.local_exec:
        WARM.extend(w for w in [warm.start_for_jobs(snakemake_threads=THREADS)] if w is not None)


def _stop_warm():
    while WARM:
        WARM.pop().stop()


onsuccess:
    _stop_warm()
    # One checkout, both engines: a complete build is recorded in dvc.lock (diffrepro.wiring.sync).
    from diffrepro.wiring.sync import after_snakemake

    after_snakemake(".", PARAMS_FILE)


onerror:
    _stop_warm()
