"""The pipeline's wiring: the one declaration of the stages (pipeline.py), both engines made from it
(engines.py: dvc.yaml and the Snakemake rules' pieces), each stage's code dependencies computed from
its imports (codedeps.py), one checkout for both engines (sync.py) and the checks run when a
pipeline is planned (checks.py). Nothing here computes a result: a stage's code never imports it,
except the report, whose inputs the declaration decides, and the train stage, which records the
digest of its own code (codedeps.code_digest) in its resumable state.
"""
