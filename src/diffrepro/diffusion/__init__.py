"""Diffusion processes: forward/reverse math that takes the network as an argument."""
