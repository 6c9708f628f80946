# diffrepro: dataset preparation -> training (DDPM and SD-2015 families) -> samples -> inpainting
# -> NLL bound and FID/KID -> metric tables. Every rule calls the `diffrepro` CLI; logic lives in src/.
# The stages are declared once, in src/diffrepro/wiring/pipeline.py: workflow/rules/pipeline.smk builds the
# rules from that declaration and `diffrepro dvc-yaml` renders dvc.yaml from it.

# params.yaml (or the one --configfile given) is read by workflow/rules/common.smk, not by a
# `configfile:` directive, so that a malformed file gets the project's one-line error naming it.


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


rule all:
    input:
        engines.all_targets(config),


include: "workflow/rules/pipeline.smk"
