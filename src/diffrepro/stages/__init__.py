"""Pipeline stages: one module per `diffrepro <stage>` subcommand, each with add_arguments and run."""
STAGES = ("prepare", "features", "train", "sample", "inpaint", "nll", "fid", "report")
