"""Sample-quality metrics: `fid` (FID/KID through torch-fidelity in a small classifier's or the data's
feature space, and the standard Inception-v3 path from local weights) and `parzen` (SD-2015 Table 2's
Parzen-window log-likelihood of a test set under a model's samples).

Import the submodule (`from diffrepro.metrics.fid import fid_kid`); importing it registers the
diffrepro feature extractors with torch-fidelity.
"""
