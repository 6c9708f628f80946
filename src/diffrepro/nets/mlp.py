"""Time-conditioned MLP for vector data (2-D points, binary sequences)."""
from __future__ import annotations

import torch
from torch import nn

from diffrepro.nets.activations import make_activation
from diffrepro.nets.embeddings import timestep_embedding


class TimeMLP(nn.Module):
    """MLP whose every hidden layer gets a projection of the timestep embedding added before its
    nonlinearity (the DDPM ResBlock recipe, without convolutions):

        temb = Linear(act(Linear(sinusoid(t, time_embed_dim))))           [N x hidden]
        h_0 = x;  h_l = act(W_l h_{l-1} + P_l act(temb))   for l = 1..layers  [N x hidden]
        out = W_out h_layers                                                [N x out_mult*D]

    The output layer is zero-initialised, so an untrained net predicts 0 (ε = 0, or a
    zero-logit/mean perturbation), as the DDPM U-Net's output convolution does.

    t is the raw 0-based step index (as in the DDPM code); num_timesteps is kept for the record.
    """

    def __init__(self, data_shape=(2,), out_mult: int = 1, num_timesteps: int = 1000, hidden: int = 128,
                 layers: int = 3, time_embed_dim: int = 64, activation: str = "silu"):
        super().__init__()
        data_shape = tuple(data_shape)
        if len(data_shape) != 1:
            raise ValueError(f"TimeMLP needs vector data, data_shape (D,); got {data_shape}")
        if layers < 1:
            raise ValueError(f"TimeMLP layers must be >= 1; got {layers}")
        if out_mult < 1:
            raise ValueError(f"TimeMLP out_mult must be >= 1; got {out_mult}")
        self.data_shape = data_shape
        self.out_mult = out_mult
        self.num_timesteps = num_timesteps
        self.time_embed_dim = time_embed_dim
        self.act = make_activation(activation)
        self.time_embed = nn.Sequential(
            nn.Linear(time_embed_dim, hidden), make_activation(activation), nn.Linear(hidden, hidden))
        dim = data_shape[0]
        self.hidden_layers = nn.ModuleList(
            nn.Linear(dim if i == 0 else hidden, hidden) for i in range(layers))
        self.time_projs = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, out_mult * dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t: [N x D]; t: [N] steps. Returns [N x out_mult*D]."""
        temb = self.act(self.time_embed(timestep_embedding(t, self.time_embed_dim).to(x_t.dtype)))
        h = x_t
        for layer, proj in zip(self.hidden_layers, self.time_projs):
            h = self.act(layer(h) + proj(temb))
        return self.out(h)
