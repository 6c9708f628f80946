# diffrepro: dataset preparation -> training (DDPM and SD-2015 families) -> samples -> inpainting
# -> NLL bound and FID/KID -> metric tables. Every rule calls the `diffrepro` CLI; logic lives in src/.
# dvc.yaml declares the same stages (tests/test_dag_agreement.py keeps the two in step).

configfile: "params.yaml"


include: "workflow/rules/common.smk"


rule all:
    input:
        expand("results/data/{dataset}/preview.png", dataset=DATASETS),
        expand("results/features/{dataset}.pt", dataset=DATASETS),
        expand("results/runs/{run}/{out}", run=RUNS,
               out=["samples.png", "progressive.png", "inpaint.png", "nll_terms.png", "loss.png", "schedule.png"]),
        "results/metrics.csv",
        "results/metrics.md",


include: "workflow/rules/data.smk"
include: "workflow/rules/diffusion.smk"
include: "workflow/rules/evaluate.smk"
