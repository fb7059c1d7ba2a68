"""The book's chapter 5 code, the baseline every benchmark measures the course against.

Kept as close to the book as today's libraries allow: ``random.sample`` gets sorted lists
(it no longer accepts a set) and the models are the course's ``tf.Module`` models (a
Keras 3 ``tf.keras.Model`` does not track raw ``tf.Variable`` attributes).  The
per-notebook pipelines (:data:`BOOK_PIPELINES`) do what each notebook does, the book's
way, on the same file; each timed part runs inside ``stage(name, done, total, kind)``
(:class:`benchmarks.harness.Stages`), which scales a part timed on a subset linearly.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import random
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import scipy.sparse as sp
from tqdm import tqdm

from recsys_helpers.datasets import get_dataset

BATCH_SIZE = 50_000  # the book's Nsamples
K = 5  # latent dimension of the book's main examples
LAMBDA = 1e-5  # the book's regularisation strength
LEARNING_RATE = 0.1  # the book's Adam learning rate
#: Training steps of each model in notebooks 03, 04 and the exercises (their ``STEPS``).
NOTEBOOK_STEPS = 100
FANTASY_TSV = get_dataset("fantasy_tsv").filename
FANTASY_REVIEWS = get_dataset("fantasy_reviews").filename
COMICS_REVIEWS = get_dataset("comics_reviews").filename
_NO_BUILTINS = {"__builtins__": {}}  # the namespace the book's eval runs in here


def tensorflow():
    """TensorFlow, imported on first use: the Surprise and implicit pipelines train no
    TensorFlow model, and importing it would add about 0.5 GB to the memory they measure."""
    from recsys_helpers import models  # imports TensorFlow, its probes silenced

    return models.tf


def book_load(path: Path, n_lines: int | None) -> list[dict]:
    """The book's ``parseData`` on the first ``n_lines`` lines of ``path`` (None: all):
    ``eval`` of each line, its review text deleted, appended to a list of dicts."""
    data = []
    with gzip.open(path) as fh:
        lines = itertools.islice(fh, n_lines)
        for line in tqdm(lines, total=n_lines, desc="book: eval per line", leave=False):
            # The book parses each line with eval: measured here as the baseline, on the
            # synthetic files the benchmarks generate, with no builtins within reach (the
            # same work for a dict literal); the course never evaluates data.
            d = eval(line, _NO_BUILTINS)
            del d["review_text"]
            data.append(d)
    return data


def book_csr(users, items, n_users: int, n_items: int) -> sp.csr_matrix:
    """The book's sparse matrix: an items x users ``lil_matrix`` filled one interaction at
    a time, then the CSR matrix of its transpose (users x items).  ``users`` and ``items``
    are lists of indices or iterables (looking the indices up one at a time, as the book)."""
    Xiu = sp.lil_matrix((n_items, n_users))
    total = len(users) if hasattr(users, "__len__") else None
    for u, i in tqdm(zip(users, items), total=total, desc="book: lil_matrix", leave=False):
        Xiu[i, u] = 1
    return sp.csr_matrix(Xiu.T)


def book_predict(model, u: int, i: int):
    """The book's ``BPRbatch.predict``: one (user, item) pair's score, eagerly."""
    tf = tensorflow()
    return model.beta_i[i] + tf.tensordot(model.gamma_u[u], model.gamma_i[i], 1)


def book_auc(model, users, test_per_user, item_list, user_index, item_index, rnd,
             N: int = 10) -> float:
    """The book's ``AUC()``: the mean over ``users`` of ``AUCu(u, N)``, the fraction of
    (positive, negative) pairs, ``min(N, test items of u)`` of each, where the user's
    held-out item scores higher than a test item the user did not interact with, each
    score one ``predict`` call.

    On today's Python ``random.sample`` gets sorted lists (it no longer accepts a set),
    and the book's ``sorted(itemSet - test items of u)`` filters the sorted ``item_list``
    (made once), so that the baseline is not charged a sort per user.
    """
    aucs = []
    for u in tqdm(users, desc="book: AUCu per user", leave=False):
        positives_u = test_per_user[u]
        n = min(N, len(positives_u))
        positive = rnd.sample(sorted(positives_u), n)
        negative = rnd.sample([j for j in item_list if j not in positives_u], n)
        win = 0
        for i, j in zip(positive, negative):
            si = book_predict(model, user_index[u], item_index[i]).numpy()
            sj = book_predict(model, user_index[u], item_index[j]).numpy()
            if si > sj:
                win += 1
        aucs.append(win / n)
    return sum(aucs) / len(aucs)


def book_apply(model, optimizer, tape, loss) -> float:
    """The end of the book's training steps: gradients, then Adam, skipping ``None``."""
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients((grad, var) for (grad, var)
                              in zip(gradients, model.trainable_variables)
                              if grad is not None)
    return loss.numpy()


def book_step_lfm(model, optimizer, interactions_train, user_index, item_index, rnd) -> float:
    """The book's ``trainingStep``: a ``random.choice`` loop builds the batch from (user,
    item, rating) tuples of raw IDs, then one eager step."""
    tf = tensorflow()
    with tf.GradientTape() as tape:
        sample_u, sample_i, sample_r = [], [], []
        for _ in range(BATCH_SIZE):
            u, i, r = rnd.choice(interactions_train)
            sample_u.append(user_index[u])
            sample_i.append(item_index[i])
            sample_r.append(r)
        loss = model.loss(tf.convert_to_tensor(sample_u, dtype=tf.int32),
                          tf.convert_to_tensor(sample_i, dtype=tf.int32),
                          tf.convert_to_tensor(sample_r, dtype=tf.float32))
    return book_apply(model, optimizer, tape, loss)


def book_step_bpr(model, optimizer, interactions_train, user_index, item_index, items,
                  items_per_user, rnd) -> float:
    """The book's ``trainingStepBPR``: as :func:`book_step_lfm`, plus a negative item per
    sample drawn by ``random.choice(items)`` until it is not in the user's list."""
    tf = tensorflow()
    with tf.GradientTape() as tape:
        sample_u, sample_i, sample_j = [], [], []
        for _ in range(BATCH_SIZE):
            u, i, _ = rnd.choice(interactions_train)
            j = rnd.choice(items)
            while j in items_per_user[u]:
                j = rnd.choice(items)
            sample_u.append(user_index[u])
            sample_i.append(item_index[i])
            sample_j.append(item_index[j])
        loss = model.loss(tf.convert_to_tensor(sample_u, dtype=tf.int32),
                          tf.convert_to_tensor(sample_i, dtype=tf.int32),
                          tf.convert_to_tensor(sample_j, dtype=tf.int32))
    return book_apply(model, optimizer, tape, loss)


def book_mse(predictions, labels) -> float:
    """The book's ``MSE``: a list comprehension of squared differences."""
    differences = [(x - y) ** 2 for x, y in zip(predictions, labels)]
    return sum(differences) / len(differences)


def book_predict_rating(model, u: int, i: int):
    """The book's ``LatentFactorModel.predict`` of one pair, eagerly (for K = 0, that of
    ``LatentFactorModelBiasOnly``)."""
    tf = tensorflow()
    p = model.alpha + model.beta_u[u] + model.beta_i[i]
    if model.gamma_u.shape[1]:
        p += tf.tensordot(model.gamma_u[u], model.gamma_i[i], 1)
    return p


def book_comics(data_dir: Path, rnd: random.Random, stage) -> SimpleNamespace:
    """The book's reading of the comics file and its data structures (In [22]-[27]): each
    line parsed by ``eval``, (user, item, rating) tuples and ID dicts, shuffled, split
    90/10, the training items listed per user."""
    with stage("parse: eval per line, (user, item, rating) tuples, ID dicts"):
        user_index, item_index, interactions = {}, {}, []
        with gzip.open(data_dir / COMICS_REVIEWS, "r") as g:
            for line in tqdm(g, desc="book: eval per line", mininterval=10):
                d = eval(line, _NO_BUILTINS)  # the book's parser (see book_load)
                u, i, r = d["user_id"], d["book_id"], d["rating"]
                if u not in user_index:
                    user_index[u] = len(user_index)
                if i not in item_index:
                    item_index[i] = len(item_index)
                interactions.append((u, i, r))
    with stage("shuffle, 90/10 split, per-user and per-item lists, mean rating"):
        rnd.shuffle(interactions)
        n_train = int(len(interactions) * 0.9)
        train, test = interactions[:n_train], interactions[n_train:]
        items_per_user, users_per_item = defaultdict(list), defaultdict(list)
        for u, i, _ in train:
            items_per_user[u].append(i)
            users_per_item[i].append(u)
        mu = sum(r for _, _, r in train) / len(train)
    return SimpleNamespace(user_index=user_index, item_index=item_index, train=train,
                           test=test, items_per_user=items_per_user, mu=mu,
                           items=list(item_index), n_users=len(user_index),
                           n_items=len(item_index))


def book_training(stage, name: str, model, step, opts):
    """``model`` trained the book's way: a fresh Adam(0.1), ``step(model, optimizer, rnd)``
    the notebook's number of times, eagerly (``--book-steps``: fewer, scaled)."""
    optimizer = tensorflow().keras.optimizers.Adam(LEARNING_RATE)
    rnd = random.Random(opts.seed)
    n = min(opts.book_steps or NOTEBOOK_STEPS, NOTEBOOK_STEPS)
    with stage(name, done=n, total=NOTEBOOK_STEPS, kind="training steps of each model"):
        for _ in tqdm(range(n), desc=name, mininterval=10):
            step(model, optimizer, rnd)
    return model


def train_lfm(stage, data, train, K: int, lamb: float, opts, what: str):
    """A latent factor model (``K = 0``: biases only) trained on ``train`` by the book's
    ``trainingStep``."""
    from recsys_helpers import models

    mu = sum(r for _, _, r in train) / len(train)
    model = models.LatentFactorModel(mu, data.n_users, data.n_items, K, lamb, seed=opts.seed)
    return book_training(stage, f"{what}: training steps (K={K}, lambda={lamb:g})", model,
                         lambda m, o, rnd: book_step_lfm(m, o, train, data.user_index,
                                                         data.item_index, rnd), opts)


def per_pair_mse(stage, data, model, pairs, opts, name: str, evaluate=book_mse):
    """The book's test MSE (In [50]-[52]; ``evaluate`` of predictions and labels): one
    eager ``predict`` per pair, timed on the first ``--book-pairs`` (shuffled) and scaled."""
    part = pairs[:opts.book_pairs]
    with stage(name, done=len(part), total=len(pairs), kind="per-pair predictions"):
        predictions = [book_predict_rating(model, data.user_index[u], data.item_index[i]).numpy()
                       for u, i, _ in part]
        return evaluate(predictions, [r for _, _, r in part])


def train_bpr(stage, data, K: int, opts):
    """A BPR model trained on the training split by the book's ``trainingStepBPR`` (a
    rejection loop draws each negative item)."""
    from recsys_helpers import models

    model = models.BPRModel(data.n_users, data.n_items, K, LAMBDA, seed=opts.seed)
    return book_training(stage, f"BPR training steps (K={K})", model,
                         lambda m, o, rnd: book_step_bpr(m, o, data.train, data.user_index,
                                                         data.item_index, data.items,
                                                         data.items_per_user, rnd), opts)


def per_pair_auc(stage, data, model, opts) -> float:
    """The book's ``AUC()`` (exercise 5.4) over the test users, timed on ``--auc-users``
    random ones and scaled."""
    with stage("AUC: test items per user, item set"):
        test_per_user, item_set = defaultdict(set), set()
        for u, i, _ in data.test:
            test_per_user[u].add(i)
            item_set.add(i)
        item_list = sorted(item_set)
    rnd = random.Random(opts.seed)
    users = sorted(test_per_user)
    subset = rnd.sample(users, min(opts.auc_users, len(users)))
    with stage("AUC: two predict calls per sampled pair", done=len(subset), total=len(users),
               kind="AUC test users"):
        return book_auc(model, subset, test_per_user, item_list, data.user_index,
                        data.item_index, rnd)


def book_01(data_dir: Path, opts, stage) -> dict:
    """01: Surprise, as in the book (the course uses the same library here)."""
    from surprise import SVD, Dataset, Reader
    from surprise.model_selection import train_test_split

    with stage("Reader, Dataset.load_from_file"):
        reader = Reader(line_format="user item rating", sep="\t")
        data = Dataset.load_from_file(str(data_dir / FANTASY_TSV), reader=reader)
    with stage("train_test_split (25% test)"):
        trainset, testset = train_test_split(data, test_size=0.25, random_state=opts.seed)
    with stage("SVD fit and test"):
        model = SVD(random_state=opts.seed)
        model.fit(trainset)
        predictions = model.test(testset)
    with stage("MSE loop"):
        sse = 0
        for p in predictions:
            sse += (p.r_ui - p.est) ** 2
        mse = sse / len(predictions)
    return {"test_mse": mse, "first_estimate": predictions[0].est}


def book_02(data_dir: Path, opts, stage) -> dict:
    """02: the fantasy reviews parsed with ``eval`` into a list of dicts, ID dicts, the
    ``lil_matrix`` loop, implicit's BPR (factors=5).  The book's notebook also imports
    TensorFlow; this process does not, which only lowers the book's memory."""
    from implicit.bpr import BayesianPersonalizedRanking

    with stage("parse: eval per line, review_text deleted, list of dicts"):
        data = book_load(data_dir / FANTASY_REVIEWS, None)
    with stage("random.shuffle"):
        random.Random(opts.seed).shuffle(data)
    with stage("userIDs, itemIDs dicts"):
        user_ids, item_ids = {}, {}
        for d in data:
            u, i = d["user_id"], d["book_id"]
            if u not in user_ids:
                user_ids[u] = len(user_ids)
            if i not in item_ids:
                item_ids[i] = len(item_ids)
    with stage("lil_matrix loop, CSR of the transpose"):
        # The book's loop looks both indices up per interaction: generators do the same.
        Xui = book_csr((user_ids[d["user_id"]] for d in data),
                       (item_ids[d["book_id"]] for d in data), len(user_ids), len(item_ids))
    with stage("BayesianPersonalizedRanking(factors=5).fit"):
        # implicit >= 0.5 takes users x items (the book, on 0.4, passed the transpose).
        model = BayesianPersonalizedRanking(factors=5, random_state=opts.seed)
        model.fit(Xui)
    with stage("recommend, similar_items, factors"):
        ids, _ = model.recommend(0, Xui[0])
        related, _ = model.similar_items(0)
        item_factors = model.item_factors
    return {"n_users": len(user_ids), "n_items": len(item_ids), "nnz": int(Xui.nnz),
            "item_factor_columns": int(item_factors.shape[1]), "similar_first": int(related[0])}


def book_03(data_dir: Path, opts, stage) -> dict:
    """03: the comics file read the book's way, the LFM (K=5) trained, one prediction."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    model = train_lfm(stage, data, data.train, K, LAMBDA, opts, "LFM")
    with stage("one prediction"):
        u, i, _ = data.test[0]
        p = float(book_predict_rating(model, data.user_index[u], data.item_index[i]).numpy())
    return {"n_interactions": len(data.train) + len(data.test), "prediction": p}


def book_04(data_dir: Path, opts, stage, k: int = K) -> dict:
    """04 (5.4: ``k=10``): the comics file read the book's way, BPR trained on the
    training split, then the book's per-pair AUC."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    model = train_bpr(stage, data, k, opts)
    return {"auc_sampled_subset": per_pair_auc(stage, data, model, opts)}


def book_5_1(data_dir: Path, opts, stage) -> dict:
    """5.1: always-the-mean, and two bias-only models (the solution's answer and its
    hidden tests' reference) with the book's per-pair test MSE."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    with stage("always-the-mean MSE"):
        mse_mean = book_mse([data.mu for _ in data.test], [r for _, _, r in data.test])
    figures = {"mse_always_mean": mse_mean}
    for what in ("bias-only", "reference bias-only"):
        model = train_lfm(stage, data, data.train, 0, LAMBDA, opts, what)
        figures[f"mse {what} (subset)"] = per_pair_mse(
            stage, data, model, data.test, opts, f"{what}: one predict call per pair")
    return figures


def book_5_2(data_dir: Path, opts, stage) -> dict:
    """5.2, seven models as the solution: bias-only, K=10 for four lambdas on a
    fit/validation split, the chosen one on the training split and (hidden tests) again
    on the fit split, each evaluated by per-pair predictions."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    n_fit = int(len(data.train) * 0.9)
    fit_part, validation = data.train[:n_fit], data.train[n_fit:]

    def mse(train, K, lamb, pairs, what):
        model = train_lfm(stage, data, train, K, lamb, opts, what)
        return per_pair_mse(stage, data, model, pairs, opts, f"{what}: one predict call per pair")

    figures = {"mse_bias_only (subset)": mse(data.train, 0, 1e-5, data.test, "bias-only")}
    validation_mse = {lamb: mse(fit_part, 10, lamb, validation, "candidate")
                      for lamb in (1e-5, 1e-4, 3e-4, 1e-3)}  # the notebook's LAMBDAS
    best = min(validation_mse, key=validation_mse.get)
    figures["test_mse (subset)"] = mse(data.train, 10, best, data.test, "chosen")
    mse(fit_part, 10, best, validation, "hidden test")
    return figures | {"best_lambda": best}


def book_5_3(data_dir: Path, opts, stage) -> dict:
    """5.3: a K=10 model, per-pair predictions, ``int(p + 0.5)`` rounding, both MSEs."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    model = train_lfm(stage, data, data.train, 10, 1e-4, opts, "LFM")

    def both(predictions, labels):
        rounded = [int(p + 0.5) for p in predictions]
        return book_mse(predictions, labels), book_mse(rounded, labels)

    mse_raw, mse_rounded = per_pair_mse(stage, data, model, data.test, opts,
                                        "one predict call per pair, rounding, two MSEs", both)
    return {"mse_raw (subset)": mse_raw, "mse_rounded (subset)": mse_rounded}


#: The book's pipeline for each notebook of the course, by notebook stem.
BOOK_PIPELINES = {
    "01_latent_factor_surprise": book_01,
    "02_bpr_implicit": book_02,
    "03_latent_factor_tensorflow": book_03,
    "04_bpr_tensorflow": book_04,
    "exercise_5_1": book_5_1,
    "exercise_5_2": book_5_2,
    "exercise_5_3": book_5_3,
    "exercise_5_4": functools.partial(book_04, k=10),
}
