"""training/ tests: one torch thread (2-core machine) and skyloc_training importable."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

try:
    import torch
    torch.set_num_threads(1)
except ImportError:  # the extras were not installed (scripts/bootstrap.sh found too little disk)
    torch = None

# Without the training extras these modules cannot even be imported: they are left out (the
# data, merge, pair and augmentation tests still run; the others skip by importorskip).
collect_ignore = ['test_lora.py', 'test_loss.py', 'test_train.py', 'test_ddp.py'] \
    if torch is None else []


import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _cli_logging_restored():
    """The commands' main() set up process-wide logging as a CLI does (a '[tag]' handler on
    the skyloc_training logger, not propagated); undo it after each test so that caplog sees
    the next test's records."""
    yield
    logger = logging.getLogger('skyloc_training')
    for handler in [h for h in logger.handlers if getattr(h, 'skyloc_cli', False)]:
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
