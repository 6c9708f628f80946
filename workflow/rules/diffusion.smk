# Diffusion runs: train, sample, inpaint.


rule train:
    input:
        train=lambda wc: f"{data_dir(wc)}/train.npz",
    output:
        model="results/runs/{run}/model.pt",
        metrics="results/runs/{run}/train.json",
        loss="results/runs/{run}/loss.csv",
        curve="results/runs/{run}/loss.png",
        schedule="results/runs/{run}/schedule.csv",
        schedule_plot="results/runs/{run}/schedule.png",
    params:
        settings=run_settings("dataset", "model", "diffusion", "train"),
        model=model_settings,
        seed=config["seed"],
        data_dir=data_dir,
    log:
        "logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    priority: run_priority
    threads: THREADS
    resources:
        gpu=1,
    shell:
        "diffrepro train --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --run {wildcards.run} --data-dir {params.data_dir} --out-dir results/runs/{wildcards.run}"


rule sample:
    input:
        model="results/runs/{run}/model.pt",
        test=lambda wc: f"{data_dir(wc)}/test.npz",
    output:
        samples="results/runs/{run}/samples.npz",
        picture="results/runs/{run}/samples.png",
        progressive="results/runs/{run}/progressive.png",
    params:
        settings=run_settings("sample"),
        data_dir=data_dir,
    log:
        "logs/sample/{run}.log",
    benchmark:
        "results/benchmarks/sample/{run}.tsv"
    priority: run_priority
    threads: THREADS
    shell:
        "diffrepro sample --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --run {wildcards.run} --checkpoint results/runs/{wildcards.run}/model.pt"
        " --data-dir {params.data_dir} --out-dir results/runs/{wildcards.run}"


rule inpaint:
    input:
        model="results/runs/{run}/model.pt",
        train=lambda wc: f"{data_dir(wc)}/train.npz",
        test=lambda wc: f"{data_dir(wc)}/test.npz",
    output:
        metrics="results/runs/{run}/inpaint.json",
        arrays="results/runs/{run}/inpaint.npz",
        panel="results/runs/{run}/inpaint.png",
    params:
        settings=run_settings("inpaint"),
        data_dir=data_dir,
    log:
        "logs/inpaint/{run}.log",
    benchmark:
        "results/benchmarks/inpaint/{run}.tsv"
    priority: run_priority
    threads: THREADS
    shell:
        "diffrepro inpaint --params {PARAMS_FILE} --threads {threads} --log {log}"
        " --run {wildcards.run} --checkpoint results/runs/{wildcards.run}/model.pt"
        " --data-dir {params.data_dir} --out-dir results/runs/{wildcards.run}"
