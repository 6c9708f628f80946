# Evaluation: the variational bound (nll), FID/KID (fid) and the metric tables (report).


rule nll:
    input:
        model="results/runs/{run}/model.pt",
        train=lambda wc: f"{data_dir(wc)}/train.npz",
        test=lambda wc: f"{data_dir(wc)}/test.npz",
    output:
        metrics="results/runs/{run}/nll.json",
        terms="results/runs/{run}/nll_terms.csv",
        plot="results/runs/{run}/nll_terms.png",
    params:
        settings=run_settings("eval"),
        data_dir=data_dir,
    log:
        "logs/nll/{run}.log",
    benchmark:
        "results/benchmarks/nll/{run}.tsv"
    priority: run_priority
    threads: THREADS
    shell:
        "diffrepro nll --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --run {wildcards.run} --checkpoint results/runs/{wildcards.run}/model.pt"
        " --data-dir {params.data_dir} --out-dir results/runs/{wildcards.run}"


rule fid:
    input:
        samples="results/runs/{run}/samples.npz",
        extractor=lambda wc: f"results/features/{run_dataset(wc)}.pt",
        train=lambda wc: f"{data_dir(wc)}/train.npz",
        test=lambda wc: f"{data_dir(wc)}/test.npz",
    output:
        metrics="results/runs/{run}/fid.json",
    params:
        settings=run_settings("eval"),
        data_dir=data_dir,
        extractor=lambda wc: f"results/features/{run_dataset(wc)}.pt",
    log:
        "logs/fid/{run}.log",
    benchmark:
        "results/benchmarks/fid/{run}.tsv"
    priority: run_priority
    threads: THREADS
    shell:
        "diffrepro fid --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --run {wildcards.run} --samples results/runs/{wildcards.run}/samples.npz"
        " --data-dir {params.data_dir} --extractor {params.extractor} --out results/runs/{wildcards.run}/fid.json"


rule report:
    input:
        expand("results/runs/{run}/{stage}.json", run=RUNS, stage=["train", "nll", "fid", "inpaint"]),
    output:
        csv="results/metrics.csv",
        md="results/metrics.md",
    params:
        runs=RUNS,
    log:
        "logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    threads: THREADS
    shell:
        "diffrepro report --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --runs-dir results/runs --out-csv results/metrics.csv --out-md results/metrics.md"
