"""diffrepro's feature spaces as torch-fidelity extractors: importing this module registers the
"classifier" and "identity" checkpoints of metrics/fid.py (`save_extractor`) as
"diffrepro-classifier" and "diffrepro-identity", for `torch_fidelity.calculate_metrics(...,
feature_extractor="diffrepro-classifier", feature_extractor_weights_path=<checkpoint>)`.

No stage imports it (torch-fidelity's package pulls in torchvision and torch's compiler): the stages
score with metrics/fid.py's `fid_kid_from_features`, which gives torch-fidelity's figures.
"""
from __future__ import annotations

import torch
import torch_fidelity
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from diffrepro.metrics.fid import EXTRACTOR_KINDS, FEATURE_LAYER, load_extractor


class _CheckpointFeatureExtractor(torch_fidelity.FeatureExtractorBase):
    """A torch-fidelity extractor over a `save_extractor` checkpoint given as feature_extractor_weights_path.

    Input batches: float [N x ...] in the data convention, or uint8 images (mapped to v / 127.5 - 1).
    Output: one feature layer, "features", [N x feat_dim] in float64 (FID statistics in float64).
    """

    KIND = ""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"feature extractor {name!r} needs feature_extractor_weights_path, "
                             f"a checkpoint written by diffrepro.metrics.fid.save_extractor")
        net, meta = load_extractor(feature_extractor_weights_path)
        if meta["kind"] != self.KIND:
            raise ValueError(f"feature extractor {name!r} needs a {self.KIND!r} checkpoint, "
                             f"{feature_extractor_weights_path!r} holds a {meta['kind']!r} one")
        self.net = net

    @staticmethod
    def get_provided_features_list():
        return (FEATURE_LAYER,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric not in ("fid", "kid", "prc"):
            raise ValueError(f"diffrepro feature extractors support fid, kid and prc, not {metric!r}")
        return FEATURE_LAYER

    @staticmethod
    def can_be_compiled():
        return False

    def forward(self, x):
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 127.5 - 1.0
        return (self.net.features(x.to(torch.float32)).to(torch.float64),)


class ClassifierFeatureExtractor(_CheckpointFeatureExtractor):
    KIND = "classifier"


class IdentityFeatureExtractor(_CheckpointFeatureExtractor):
    KIND = "identity"


def _register_extractors() -> None:
    for cls in (ClassifierFeatureExtractor, IdentityFeatureExtractor):
        name = EXTRACTOR_KINDS[cls.KIND][1]
        if name not in FEATURE_EXTRACTORS_REGISTRY:  # importing twice (e.g. reload) must not fail
            torch_fidelity.register_feature_extractor(name, cls)


_register_extractors()
