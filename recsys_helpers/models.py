"""The chapter's two TensorFlow models and their compiled training step.

Both models are ``tf.Module`` subclasses: a ``tf.Variable`` stored as an attribute of a
``tf.Module`` is tracked, so ``model.trainable_variables`` lists it.  (On Keras 3 a
``tf.keras.Model`` does *not* track raw ``tf.Variable`` attributes, and the book's
training loop then silently trains nothing.)

The chapter notebooks show this code verbatim; a test keeps the two copies identical.

TensorFlow is imported here (and only here), with its C++ start-up messages quieted; take
``tf`` from this module (``from recsys_helpers.models import tf``) and the order of a
notebook's imports does not matter.  Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see the messages.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from .progress import trange


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence messages that TensorFlow's C++ runtime writes straight to file descriptor 2.

    On a machine without a GPU, TensorFlow probes for CUDA at start-up and logs the failed
    probes before its log level applies; they are noise for this course.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# TensorFlow's C++ start-up messages (CUDA probes on a machine without a GPU, CPU
# instruction notices) clutter the notebooks.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

with _native_stderr_silenced():
    import tensorflow as tf

    tf.constant(0.0)  # initialise the devices now, while the probes are silenced

__all__ = ["LatentFactorModel", "BPRModel", "make_train_step", "fit", "tf"]


class LatentFactorModel(tf.Module):
    r"""Latent factor model for rating prediction.

    .. math:: \hat r(u, i) = \alpha + \beta_u + \beta_i + \gamma_u \cdot \gamma_i

    trained on :math:`\frac{1}{2|B|}\sum_{(u,i,r)\in B} (\hat r(u,i) - r)^2 +
    \lambda_\beta(\|\beta_u\|^2 + \|\beta_i\|^2) + \lambda_\gamma(\|\gamma_u\|^2 + \|\gamma_i\|^2)`
    for batches :math:`B` of training interactions.  ``lamb`` is :math:`\lambda_\beta`,
    the biases' weight; ``lamb_factors`` is :math:`\lambda_\gamma`, the factors' weight
    (``None``: the same as ``lamb``, the book's single :math:`\lambda`).
    """

    def __init__(self, mu, n_users, n_items, K, lamb, seed=0, lamb_factors=None):
        super().__init__()
        init = tf.random.Generator.from_seed(seed)
        self.alpha = tf.Variable(mu, dtype=tf.float32, name="alpha")  # start at the mean
        self.beta_u = tf.Variable(init.normal([n_users], stddev=0.001), name="beta_u")
        self.beta_i = tf.Variable(init.normal([n_items], stddev=0.001), name="beta_i")
        self.gamma_u = tf.Variable(init.normal([n_users, K], stddev=0.001), name="gamma_u")
        self.gamma_i = tf.Variable(init.normal([n_items, K], stddev=0.001), name="gamma_i")
        # The lambdas are variables too, but not trained: a compiled training step reads
        # them anew each time, so one step serves every lambda a grid search tries.
        self.lamb = tf.Variable(lamb, dtype=tf.float32, trainable=False, name="lamb")
        self.lamb_factors = tf.Variable(lamb if lamb_factors is None else lamb_factors,
                                        dtype=tf.float32, trainable=False, name="lamb_factors")

    def predict(self, u, i):
        """Predicted ratings for arrays of users ``u`` and items ``i``."""
        return (self.alpha
                + tf.gather(self.beta_u, u)
                + tf.gather(self.beta_i, i)
                + tf.reduce_sum(tf.gather(self.gamma_u, u) * tf.gather(self.gamma_i, i), axis=1))

    def reg(self):
        """The regulariser: each lambda times the sum of its squared parameters."""
        return (self.lamb * (tf.reduce_sum(self.beta_u ** 2) + tf.reduce_sum(self.beta_i ** 2))
                + self.lamb_factors * (tf.reduce_sum(self.gamma_u ** 2)
                                       + tf.reduce_sum(self.gamma_i ** 2)))

    def loss(self, u, i, r):
        """The objective on one batch: half the mean squared error plus the regulariser."""
        r = tf.cast(r, tf.float32)
        return tf.nn.l2_loss(self.predict(u, i) - r) / tf.cast(tf.size(r), tf.float32) + self.reg()


class BPRModel(tf.Module):
    r"""Bayesian Personalized Ranking with a latent factor score.

    .. math:: x_{u,i} = \beta_i + \gamma_u \cdot \gamma_i

    trained on :math:`-\frac{1}{|B|}\sum_{(u,i,j)\in B} \ln \sigma(x_{u,i} - x_{u,j})
    + \lambda_\beta\|\beta_i\|^2/2 + \lambda_\gamma(\|\gamma_u\|^2 + \|\gamma_i\|^2)/2`, where
    ``i`` is an item the user interacted with and ``j`` one they did not.  ``lamb`` is
    :math:`\lambda_\beta`; ``lamb_factors`` is :math:`\lambda_\gamma` (``None``: the same).
    """

    def __init__(self, n_users, n_items, K, lamb, seed=0, lamb_factors=None):
        super().__init__()
        init = tf.random.Generator.from_seed(seed)
        self.beta_i = tf.Variable(init.normal([n_items], stddev=0.001), name="beta_i")
        self.gamma_u = tf.Variable(init.normal([n_users, K], stddev=0.001), name="gamma_u")
        self.gamma_i = tf.Variable(init.normal([n_items, K], stddev=0.001), name="gamma_i")
        # not trained, read anew by a compiled step (see LatentFactorModel)
        self.lamb = tf.Variable(lamb, dtype=tf.float32, trainable=False, name="lamb")
        self.lamb_factors = tf.Variable(lamb if lamb_factors is None else lamb_factors,
                                        dtype=tf.float32, trainable=False, name="lamb_factors")

    def score(self, u, i):
        """Scores x_ui for arrays of users ``u`` and items ``i`` (higher ranks first)."""
        return tf.gather(self.beta_i, i) + tf.reduce_sum(
            tf.gather(self.gamma_u, u) * tf.gather(self.gamma_i, i), axis=1)

    def score_users(self, u):
        """Scores of every item for each user in ``u``: a len(u) x n_items matrix."""
        return tf.matmul(tf.gather(self.gamma_u, u), self.gamma_i, transpose_b=True) + self.beta_i

    def reg(self):
        """The regulariser: each lambda times half the sum of its squared parameters."""
        return (self.lamb * tf.nn.l2_loss(self.beta_i)
                + self.lamb_factors * (tf.nn.l2_loss(self.gamma_u) + tf.nn.l2_loss(self.gamma_i)))

    def loss(self, u, i, j):
        """The objective on one batch of (user, positive item, negative item) triples."""
        x_uij = self.score(u, i) - self.score(u, j)
        return -tf.reduce_mean(tf.math.log_sigmoid(x_uij)) + self.reg()


def make_train_step(model, optimizer):
    """A training step compiled with ``tf.function``: one gradient update on one batch.

    The returned function takes the batch's arrays (as ``model.loss`` does) and returns
    the objective before the update. ``jit_compile=True`` has XLA fuse the step's many
    small operations: on a CPU, with batches of 50,000 from the bundled sample, a step
    took 6 ms instead of 16 (latent factor model) and 7 instead of 25 (BPR), after about
    a second of compiling.
    """

    @tf.function(jit_compile=True)
    def train_step(*batch):
        with tf.GradientTape() as tape:
            objective = model.loss(*batch)
        variables = model.trainable_variables
        gradients = tape.gradient(objective, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return objective

    return train_step


def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # another C library (musl)
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the pages the C allocator holds free back to the operating system (glibc):
    compiling a step (XLA) frees tens of MB that would otherwise stay with the process."""
    if _TRIM is not None:
        _TRIM(0)


def fit(train_step, next_batch, steps, evaluate=None, every=10, desc="training", stop=None,
        progress=True):
    """Run ``steps`` training steps with a progress bar; return the learning curve.

    Parameters
    ----------
    train_step : callable, from :func:`make_train_step`
    next_batch : callable returning the next batch as a tuple of numpy arrays
    evaluate : callable returning a dict of figures (e.g. ``{"test_mse": ...}``), called
        every ``every`` steps and after the last one
    stop : callable ``(step, figures) -> bool``, optional, called after each evaluation;
        training ends early when it returns true (see :mod:`recsys_helpers.tuning`)
    progress : bool, show the progress bar

    Returns
    -------
    dict of arrays: ``step``, ``objective`` and one array per figure of ``evaluate``.
    """
    history = {"step": [], "objective": []}
    bar = trange(steps, desc=desc, disable=not progress)
    for t in bar:
        objective = float(train_step(*(tf.constant(a) for a in next_batch())))
        if t == 0:  # the first call compiled the step
            release_freed_memory()
        if (t + 1) % every == 0 or t + 1 == steps:
            history["step"].append(t + 1)
            history["objective"].append(objective)
            figures = evaluate() if evaluate is not None else {}
            for key, value in figures.items():
                history.setdefault(key, []).append(float(value))
            bar.set_postfix(objective=f"{objective:.4f}",
                            **{k: f"{v:.4f}" for k, v in figures.items()})
            if stop is not None and stop(t + 1, figures):
                break
    bar.close()
    release_freed_memory()
    return {k: np.asarray(v) for k, v in history.items()}
