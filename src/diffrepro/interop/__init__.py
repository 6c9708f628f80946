"""Models in and out of the project: the diffusers format (diffusers.py: export a DDPM run to a
`UNet2DModel` + `DDPMScheduler` folder, read one back as a network) and safetensors (safetensors.py:
a run's weights and config without pickle). Nothing here is a pipeline stage; the `export` and
`generate` commands (tools.py) and the `diffusers` network (nets/diffusers_unet.py) use it.
"""
