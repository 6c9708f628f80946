"""Each network architecture's params keys (its constructor's keywords). Pure Python (no torch):
params are checked against it when a pipeline is planned (config.py); tests keep it equal to the
constructors' signatures in nets.NETS."""
from __future__ import annotations

ARCH_OPTIONS = {
    "mlp": ("hidden", "layers", "time_embed_dim", "activation"),
    "unet": ("preset", "base_channels", "channel_mult", "num_res_blocks", "attn_resolutions", "dropout",
             "num_groups", "resample_with_conv"),
    "sd_mlp": ("hidden", "num_bumps", "activation", "hidden_kind"),
    "sd_multiscale": ("num_scales", "conv_channels", "conv_layers", "kernel_size", "dense_hidden", "dense_layers",
                      "num_bumps", "activation", "global_dense_hidden", "global_dense_out"),
    "diffusers": ("path",),
}
