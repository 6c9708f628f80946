# Data sets: prepare (arrays + preview) and features (the FID/KID feature extractor).


rule prepare:
    output:
        train="results/data/{dataset}/train.npz",
        test="results/data/{dataset}/test.npz",
        info="results/data/{dataset}/info.json",
        preview="results/data/{dataset}/preview.png",
    params:
        settings=lambda wc: config["datasets"][wc.dataset],
        seed=config["seed"],
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    priority: dataset_priority
    threads: THREADS
    shell:
        "diffrepro prepare --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --dataset {wildcards.dataset} --out-dir results/data/{wildcards.dataset}"


rule features:
    input:
        train="results/data/{dataset}/train.npz",
        test="results/data/{dataset}/test.npz",
    output:
        extractor="results/features/{dataset}.pt",
        metrics="results/features/{dataset}.json",
    params:
        settings=lambda wc: config["datasets"][wc.dataset].get("classifier", {}),
        seed=config["seed"],
    log:
        "logs/features/{dataset}.log",
    benchmark:
        "results/benchmarks/features/{dataset}.tsv"
    priority: dataset_priority
    threads: THREADS
    shell:
        "diffrepro features --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --dataset {wildcards.dataset} --data-dir results/data/{wildcards.dataset}"
        " --out results/features/{wildcards.dataset}.pt"
