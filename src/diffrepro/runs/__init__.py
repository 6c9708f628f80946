"""What a stage does with a model: the training loop (training.py) and its processes
(distributed.py), the reverse-chain loops (sampling.py), the network as evaluation calls it on the
CPU (slicing.py), resuming after a kill (resume.py), and the checkpoint a run's train stage writes
and the later stages open (checkpoint.py).
"""
