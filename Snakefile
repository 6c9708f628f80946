# diffrepro: dataset preparation -> training (DDPM and SD-2015 families) -> samples -> inpainting
# -> NLL bound and FID/KID -> metric tables. Every rule calls the `diffrepro` CLI; logic lives in src/.
# The stages are declared once, in src/diffrepro/pipeline.py: workflow/rules/pipeline.smk builds the
# rules from that declaration and `diffrepro dvc-yaml` renders dvc.yaml from it.

configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


rule all:
    input:
        engines.all_targets(config),


include: "workflow/rules/pipeline.smk"
