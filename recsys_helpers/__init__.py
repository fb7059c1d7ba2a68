"""Shared helpers of the model-based recommendation course (PML, chapter 5).

One module per concern:

- ``datasets``      the three Goodreads files: registry, locate, load, cache
- ``download``      fetching the real files (``python -m recsys_helpers fetch``)
- ``sample``        the synthetic sample generator (``make-sample``)
- ``interactions``  ID indexing, splits, sparse matrices, negative sampling
- ``metrics``       MSE, AUC (sampled and exact), precision@K / recall@K
- ``models``        the TensorFlow latent factor and BPR models, training step
- ``plotting``      the course's plots
- ``results``       recording a notebook's figures
- ``runner``        executing the course headless (``run``)
- ``grading``       autograding exercise submissions with nbgrader (``grade``)

TensorFlow is imported only by ``models``.
"""

import os as _os

# TensorFlow's C++ start-up messages (CUDA probes on a machine without a GPU, CPU
# instruction notices) clutter the notebooks; set TF_CPP_MIN_LOG_LEVEL=0 to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .datasets import DataFormatError, load, locate  # noqa: E402
from .reproducibility import seed_everything  # noqa: E402
from .results import record  # noqa: E402

__version__ = "1.0.0"
__all__ = ["DataFormatError", "load", "locate", "record", "seed_everything", "__version__"]
