"""One place to seed every source of randomness the course uses."""

from __future__ import annotations

import os
import random
import sys

import numpy as np

__all__ = ["seed_everything"]


def seed_everything(seed: int = 0) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global generator and TensorFlow (if imported).

    TensorFlow is also put in deterministic mode, so that the same seed gives the same
    numbers.  Returns a fresh ``numpy.random.Generator`` seeded with ``seed`` for code
    that takes a generator.
    """
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.random.set_seed(seed)
        try:
            tf.config.experimental.enable_op_determinism()
        except (AttributeError, RuntimeError):  # pragma: no cover - older TensorFlow
            pass
    return np.random.default_rng(seed)
