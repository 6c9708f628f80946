"""Feature networks for FID/KID: a small image classifier and the identity map for unlabelled data.

Both expose `features(x) -> [N x feat_dim]` and a `config` dict that rebuilds them, so a checkpoint
says how to construct its network (see `diffrepro.metrics.fid.save_extractor`).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: a sample's features must not depend on its batch-mates, or FID of a
    # set against itself would change with torch-fidelity's batch size.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.ReLU(),
    )


class SmallClassifier(nn.Module):
    """conv(w) conv(w) pool conv(2w) pool conv(2w) avgpool(2x2) -> linear(feat_dim) ReLU -> linear(classes).

    Works for 8x8 digits, 28x28 MNIST and 32x32 CIFAR. Input `x` is `[N x C x H x W]` in [-1, 1]
    (the data's levels rescaled). The feature layer (as Inception's pool3) is the post-ReLU penultimate
    activation times `feature_scale`, a buffer set after training so that the features' mean square
    on the training set is 1 (KID's cubic kernel (f.g / d + 1)^3 then stays O(1), as with Inception
    features, and FIDs of retrained classifiers share a scale).
    """

    def __init__(self, in_shape=(1, 8, 8), num_classes: int = 10, width: int = 32, feat_dim: int = 64):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"SmallClassifier in_shape must be (C, H, W), got {tuple(in_shape)}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.num_classes, self.width, self.feat_dim = int(num_classes), int(width), int(feat_dim)
        channels = self.in_shape[0]
        self.trunk = nn.Sequential(
            _conv_block(channels, width), _conv_block(width, width), nn.MaxPool2d(2),
            _conv_block(width, 2 * width), nn.MaxPool2d(2),
            _conv_block(2 * width, 2 * width), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
        )
        self.feature_layer = nn.Sequential(nn.Linear(2 * width * 4, feat_dim), nn.ReLU())
        self.head = nn.Linear(feat_dim, num_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    @property
    def config(self) -> dict:
        """Constructor keywords that rebuild this network."""
        return {"in_shape": list(self.in_shape), "num_classes": self.num_classes,
                "width": self.width, "feat_dim": self.feat_dim}

    def _check_shape(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"SmallClassifier expects inputs [N x {' x '.join(map(str, self.in_shape))}], "
                             f"got {list(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N x C x H x W] in [-1, 1] -> [N x feat_dim] (post-ReLU penultimate layer)."""
        self._check_shape(x)
        return self.feature_layer(self.trunk(x)) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N x C x H x W] -> class logits [N x num_classes] (independent of feature_scale)."""
        self._check_shape(x)
        return self.head(self.feature_layer(self.trunk(x)))

    @torch.no_grad()
    def calibrate_feature_scale(self, x: torch.Tensor, batch_size: int = 1024) -> float:
        """Set feature_scale so that mean(features(x)**2) = 1 over images x [N x C x H x W]; returns it."""
        self.feature_scale.fill_(1.0)
        sum_sq = sum(float(self.features(x[i:i + batch_size]).double().pow(2).sum())
                     for i in range(0, len(x), batch_size))
        mean_sq = sum_sq / (len(x) * self.feat_dim)
        if mean_sq > 0:
            self.feature_scale.fill_(mean_sq ** -0.5)
        return float(self.feature_scale)


class IdentityFeatures(nn.Module):
    """Features of unlabelled data (points [N x 2], binary sequences [N x L]): the flattened data itself."""

    def __init__(self, data_shape=(2,)):
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.feat_dim = math.prod(self.data_shape)

    @property
    def config(self) -> dict:
        return {"data_shape": list(self.data_shape)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N x *data_shape] -> [N x prod(data_shape)]."""
        if tuple(x.shape[1:]) != self.data_shape:
            shape = " x ".join(map(str, self.data_shape))
            raise ValueError(f"IdentityFeatures expects inputs [N x {shape}], got {list(x.shape)}")
        return x.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
