# Every stage of the pipeline as a Snakemake rule, generated from the one declaration in
# src/diffrepro/wiring/pipeline.py: inputs (plus the source files the stage's code imports), outputs,
# params keys and the shell command all come from there (diffrepro.wiring.engines); dvc.yaml is rendered
# from the same table. To add or change a stage, edit pipeline.py, not this file.
from diffrepro.wiring import engines, pipeline


def _priority(st):
    """Long chains first. Preparing the data (a second each) unblocks every training, and each training
    heads a chain of evaluation jobs, so: prepare, then train, then the rest; within each, image runs
    (the U-Nets) before vector ones, then by optimiser work. On two cores the evaluations then fill
    the end, where heartbeat-sd's training used to run alone for 46 s (its data were prepared last)."""
    order = {"prepare": 2000, "train": 1000}.get(st.name, 0)
    if st.wildcard == "run":
        return lambda wildcards: order + run_priority(wildcards)
    if st.wildcard == "dataset":
        return lambda wildcards: order + dataset_priority(wildcards)
    return order


def rule_outputs(st):
    """The stage's outputs; pictures and tables flagged for `snakemake --report` in their category,
    one sub-category per run or dataset, captioned by workflow/report/<stage>-<output>.rst.

    Every output is flagged `update`: Snakemake then neither deletes it before the job runs nor
    after the job fails, and puts the previous version back if the job fails. The stages write
    each output atomically on success, so a refused or crashed job leaves the last good results as
    they were; and what a stage continues from (the train stage's state and kept checkpoints) is
    there when it re-runs. DVC does the same: dvc.yaml marks every output `persist: true`."""
    outs = {}
    for out in st.outputs:
        path = directory(out.path) if out.directory else out.path
        if out.report:
            outs[out.name] = update(report(path, caption=f"../report/{st.name}-{out.name}.rst",
                                           category=out.report,
                                           subcategory=f"{{{st.wildcard}}}" if st.wildcard else "all runs"))
        else:
            outs[out.name] = update(path)
    return outs


def declare_rule(st):
    """One rule for one declared stage (a function, so each rule's command binds its own stage)."""

    rule:
        name:
            st.name
        input:
            unpack(engines.snakemake_inputs(st, config)),
        output:
            **rule_outputs(st),
        params:
            settings=engines.snakemake_params(st, config),
        log:
            st.log,
        benchmark:
            st.benchmark
        priority: _priority(st)
        threads: engines.snakemake_threads(st, config, THREADS)  # params threads per training process
        resources:
            **engines.snakemake_resources(st, PARAMS),  # gpu, mem_mb, runtime: params `resources`
        shell:
            engines.command(st, "snakemake", PARAMS_FILE)


def declare_shard_rule(st):
    """A sharded stage's scatter job (`<stage>_shard`): shard {shard} of {shards} of a run's batches
    into one shard file, temporary (removed once the stage's own job has gathered it). Same inputs,
    params, threads and resources as the stage; see src/diffrepro/runs/shards.py."""

    rule:
        name:
            st.name + "_shard"
        input:
            unpack(engines.snakemake_inputs(st, config, shard=True)),
        output:
            shard=temp(engines.shard_pattern(st)),
        params:
            settings=engines.snakemake_params(st, config),
        log:
            st.shard_log
        benchmark:
            st.shard_benchmark
        wildcard_constraints:
            shard=r"\d+",
            shards=r"\d+",
        priority: _priority(st)
        threads: engines.snakemake_threads(st, config, THREADS)
        resources:
            **engines.snakemake_resources(st, PARAMS),
        shell:
            engines.shard_command(st, PARAMS_FILE)


for _st in pipeline.STAGES:
    declare_rule(_st)
    if _st.shards is not None:
        declare_shard_rule(_st)
