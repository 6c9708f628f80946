"""Sample-quality metrics: `fid` (FID/KID through torch-fidelity in a small classifier's or the data's
feature space, and the standard Inception-v3 path from local weights).

Import the submodule (`from diffrepro.metrics.fid import fid_kid`); importing it registers the
diffrepro feature extractors with torch-fidelity.
"""
