"""Shared helpers of the model-based recommendation course (PML, chapter 5).

One module per concern:

- ``datasets``      the Goodreads files: registry, which copy to read, load
- ``readers``       parsing the two file formats (hostile input refused)
- ``cache``         the load cache of the review files, and clearing it
- ``download``      fetching the real files (``python -m recsys_helpers fetch``)
- ``sample``        the synthetic sample generator (``make-sample``)
- ``lab``           the taste laboratory: planted genres and tastes, and their truth
- ``books``         book metadata: titles and genres, generated or real
- ``interactions``  ID indexing, splits, sparse matrices, negative sampling
- ``metrics``       MSE, AUC (sampled and exact), precision@K / recall@K
- ``models``        the TensorFlow latent factor and BPR models, training step
- ``tuning``        validation split, early stopping, grid search with one budget
- ``progress``      progress bars (widgets, or text when ``RECSYS_PROGRESS=text``)
- ``plotting``      the course's plots
- ``results``       recording a notebook's figures
- ``verdicts``      one sentence comparing two recorded figures, checked by the tests
- ``surprise_tools`` Surprise: fast training from plain lists, the settings search
- ``implicit_tools`` implicit's BPR: training in rounds, the learning-rate search, held-out figures
- ``widgets``       sliders that retrain a small model and redraw its learning curve
- ``runner``        executing the course headless (``run``)
- ``grading``       autograding exercise submissions with nbgrader (``grade``)
- ``notebook_cells`` the notebook cells that show package code (``sync-cells``)

TensorFlow is imported only by ``models`` (which quiets its start-up messages and
exports it as ``tf``); importing the package itself changes nothing in the process.
"""

from .datasets import DataFormatError, load, locate
from .reproducibility import seed_everything
from .results import record

__version__ = "1.0.0"
__all__ = ["DataFormatError", "load", "locate", "record", "seed_everything", "__version__"]
