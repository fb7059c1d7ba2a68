"""Notebook 05 executed once by the course's runner (so nbval does not): Spark's implicit
ALS learns the laboratory's planted taste, its factors add nothing to the explicit biases
on the Goodreads-like sample, and its verdicts agree with its figures.

A file of its own, so that pytest-xdist can run it beside the other notebooks' figure tests.
"""

from pathlib import Path

import pytest

from recsys_helpers.verdicts import disagreements

SPARK = Path(__file__).resolve().parent.parent / "notebooks" / "05_latent_factors_at_scale_spark.ipynb"


@pytest.mark.executes(SPARK)
def test_spark_als_learns_the_laboratory_and_adds_nothing_to_the_biases(notebook_figures):
    f = notebook_figures(SPARK.stem)
    assert f["precision_at_10_lab"] > f["precision_at_10_popularity_lab"], f
    assert f["genre_hit_rate_at_10_lab"] > 3 * f["genre_hit_rate_at_10_popularity_lab"], f
    assert f["auc_sampled_lab"] > f["auc_popularity_lab"] + 0.05, f
    # explicit ALS on the Goodreads-like ratings: biases beat the mean, factors add nothing
    assert f["mse_bias_only"] < 0.9 * f["mse_always_mean"], f
    assert abs(f["test_mse"] / f["mse_bias_only"] - 1) < 0.03, f
    assert not disagreements(f, f.verdicts), disagreements(f, f.verdicts)
    assert {v.model.endswith("_lab") for v in f.verdicts} == {True, False}
