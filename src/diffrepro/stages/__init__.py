"""Pipeline stages: one module per `diffrepro <stage>` subcommand, each with `run(args, params, device)`.

Which stages exist, and their inputs, outputs and params, is declared in `diffrepro.wiring.pipeline`.
"""
