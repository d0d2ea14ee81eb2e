"""training/ tests: one torch thread (2-core machine) and skyloc_training importable."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

try:
    import torch
    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - the training extras are installed by make test
    pass
