"""The fixed, seeded objects the benchmark saves and loads.

Every case is built from ``numpy.random.default_rng(0)`` (or scikit-learn's
``random_state=0``), so two runs on any machine time the same bytes. Fitted
models are cached as pickles in ``bench/out/cache/`` (keyed by size and
scikit-learn version) because fitting takes longer than benchmarking them.
``quick=True`` shrinks every case about 10x for smoke tests.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / "out" / "cache"


@dataclass(frozen=True)
class Case:
    """One benchmark case: a letter, a name, a description and its builder."""

    key: str
    name: str
    title: str
    build: Callable[[int], Any]  # scale divisor (1 full size, 10 quick) -> object
    cached: bool  # fitted models are cached; plain data is cheap to rebuild


# --------------------------------------------------------------------------- plain data


def _float64_count(scale: int) -> int:
    return (1 << 27) // scale  # 2**27 * 8 B = 1 GiB


def _int32_low_entropy(rng: np.random.Generator, scale: int) -> np.ndarray:
    return rng.integers(0, 1000, size=(1 << 26) // scale, dtype=np.int32)  # 256 MiB


def build_arrays(scale: int) -> dict[str, np.ndarray]:
    """(a) 1 GiB of random float64 (incompressible without a shuffle filter) and
    256 MiB of low-entropy int32: integers drawn uniformly from 0..999, i.e.
    about 10 random bits in every 32-bit value, like labels, counts or bin
    indices. Its high bytes are all zero, so a byte-shuffle filter helps a lot;
    the low bytes are random, so no codec can go below ~10/32 of the size."""
    rng = np.random.default_rng(0)
    return {
        "float64_random": rng.random(_float64_count(scale)),
        "int32_low_entropy": _int32_low_entropy(rng, scale),
    }


def build_int32_only(scale: int) -> dict[str, np.ndarray]:
    """(a) without the float64 array: for the int32 compression targets. The
    generator skips the floats' draws (one 64-bit step each) instead of making
    and dropping 1 GiB, and so draws the same integers as (a)."""
    rng = np.random.default_rng(0)
    rng.bit_generator.advance(_float64_count(scale))
    return {"int32_low_entropy": _int32_low_entropy(rng, scale)}


def build_float64_only(scale: int) -> dict[str, np.ndarray]:
    """(a) without the int32 array: the issue's "random float64 with compression
    on" target compares this array's compressed dump with its uncompressed one.
    The floats are (a)'s first draws, so nothing else is drawn."""
    return {"float64_random": np.random.default_rng(0).random(_float64_count(scale))}


def build_many_small_arrays(scale: int) -> dict[str, np.ndarray]:
    """(e) 100,000 float64 arrays of 10 elements: per-array overhead dominates."""
    rng = np.random.default_rng(0)
    return {f"k{i}": rng.random(10) for i in range(100_000 // scale)}


# --------------------------------------------------------------------------- fitted models


def build_random_forest(scale: int) -> Any:
    """(b) 200 fully grown trees: a few hundred MB of node arrays, ~400 arrays."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(50_000 // scale, 40, random_state=0)
    return RandomForestClassifier(n_estimators=200 // scale, random_state=0, n_jobs=-1).fit(X, y)


def synthetic_documents(n_docs: int, vocab_size: int = 3000, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Short documents over a pronounceable made-up vocabulary, two classes.

    Words follow a Zipf law; each class boosts its own random 10% of the
    vocabulary 4x, so the classifier has something real to learn.
    """
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < vocab_size:
        words.add("".join(rng.choice(syllables, size=rng.integers(1, 4))))
    vocab = np.array(sorted(words))
    base = 1.0 / np.arange(1, vocab_size + 1)
    rng.shuffle(base)  # which word is frequent is random, not alphabetical
    labels = rng.integers(0, 2, size=n_docs)
    lengths = rng.integers(5, 31, size=n_docs)
    docs: list[str] = [""] * n_docs
    for label in (0, 1):
        weights = base.copy()
        weights[rng.choice(vocab_size, size=vocab_size // 10, replace=False)] *= 4.0
        weights /= weights.sum()
        idx = np.flatnonzero(labels == label)
        drawn = rng.choice(vocab, size=int(lengths[idx].sum()), p=weights)
        for i, chunk in zip(idx, np.split(drawn, np.cumsum(lengths[idx])[:-1])):
            docs[i] = " ".join(chunk)
    return docs, labels


def build_tfidf_logreg(scale: int) -> Any:
    """(c) a text Pipeline as used for real text classification: words and word
    pairs (``ngram_range=(1, 2)``) over a 30,000-word Zipf vocabulary, so the
    fitted vectorizer holds a vocabulary dict of several hundred thousand terms
    (the object-heavy part) and the classifier a coefficient array per term."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    docs, labels = synthetic_documents(50_000 // scale, vocab_size=30_000)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    return Pipeline([("tfidf", vectorizer), ("clf", LogisticRegression(max_iter=200))]).fit(docs, labels)


def build_hist_gb(scale: int) -> Any:
    """(d) HistGradientBoosting: many small predictor-node arrays."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = make_classification(100_000 // scale, 30, random_state=0)
    return HistGradientBoostingClassifier(random_state=0).fit(X, y)


CASES: dict[str, Case] = {
    c.key: c
    for c in (
        Case("a", "arrays", "1 GiB random float64 + 256 MiB low-entropy int32", build_arrays, cached=False),
        Case("b", "random_forest", "RandomForestClassifier(200 trees) on 50,000 x 40", build_random_forest, cached=True),
        Case("c", "tfidf_logreg", "Pipeline(TfidfVectorizer, LogisticRegression) on 50,000 documents", build_tfidf_logreg, cached=True),
        Case("d", "hist_gb", "HistGradientBoostingClassifier on 100,000 x 30", build_hist_gb, cached=True),
        Case("e", "many_small_arrays", "dict of 100,000 float64 arrays of 10 elements", build_many_small_arrays, cached=False),
        # Not selectable on its own: run with (a) when --compressed is given.
        Case("a_int32", "arrays_int32", "case (a)'s 256 MiB low-entropy int32 array alone", build_int32_only, cached=False),
        Case("a_float64", "arrays_float64", "case (a)'s 1 GiB random float64 array alone", build_float64_only, cached=False),
    )
}
#: Cases a user selects; ``a_int32`` and ``a_float64`` follow ``a`` when compression is benchmarked.
PUBLIC_CASES = ("a", "b", "c", "d", "e")
#: (a)'s arrays one at a time, for the compression targets that name one of them.
SUB_CASES = ("a_int32", "a_float64")


def resolve_case(token: str) -> str:
    """A case key from its letter or its name (``b`` or ``random_forest``)."""
    token = token.strip().lower()
    for case in CASES.values():
        if token in (case.key, case.name):
            return case.key
    raise ValueError(f"unknown case {token!r}; known: " + ", ".join(f"{c.key} ({c.name})" for c in CASES.values()))


def build(key: str, quick: bool) -> Any:
    """The object for a case, from the cache when it is a fitted model."""
    case = CASES[key]
    scale = 10 if quick else 1
    if not case.cached:
        return case.build(scale)
    import sklearn

    path = CACHE / f"{case.name}-{'quick' if quick else 'full'}-sklearn{sklearn.__version__}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    obj = case.build(scale)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with open(partial, "wb") as f:
        pickle.dump(obj, f, protocol=5)
    partial.replace(path)  # never leave a half-written cache entry behind
    return obj
