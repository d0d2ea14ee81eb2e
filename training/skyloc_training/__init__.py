"""skyloc training/: the tree that produces the quantized model skyloc runs (issue 6).

Modules (each a `python -m skyloc_training.<name>` command): pairs (pair generation from any
georeferenced orthophoto), merge (GTA-UAV / UAV-VisLoc / VPAIR style pair JSON), train (LoRA
fine-tuning), export (local_vlad / global bundles, INT8), verify (INT8 vs FP32 report), phase2
(INT4, mixed precision, distillation), pipeline (`make model`: all of it on a small configuration).
"""
