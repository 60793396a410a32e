"""Shared fixtures for the Python test suite: small seeded datasets and a few
fitted scikit-learn models, built once per session. Plain helpers (fresh
subprocesses, temporary-file lookup) are in ``_testutil.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def classification_data() -> tuple[np.ndarray, np.ndarray]:
    """600 samples, 8 features, 3 classes; seeded."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=600, n_features=8, n_informative=5, n_classes=3, random_state=0
    )
    return X, y


@pytest.fixture(scope="session")
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    """400 samples, 6 features; seeded."""
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=400, n_features=6, noise=0.5, random_state=0)
    return X, y


@pytest.fixture(scope="session")
def mixed_data() -> tuple[np.ndarray, np.ndarray]:
    """An object array with two numeric and two categorical columns, and binary labels."""
    rng = np.random.default_rng(3)
    n = 300
    X = np.empty((n, 4), dtype=object)
    X[:, 0] = rng.normal(size=n)
    X[:, 1] = rng.integers(0, 100, size=n)
    X[:, 2] = rng.choice(["red", "green", "blue"], size=n)
    X[:, 3] = rng.choice(["s", "m", "l", "xl"], size=n)
    y = ((X[:, 0].astype(float) > 0) ^ (X[:, 2] == "red")).astype(int)
    return X, y


@pytest.fixture(scope="session")
def text_data() -> tuple[list[str], np.ndarray]:
    """A small seeded corpus of two topics."""
    rng = np.random.default_rng(5)
    sports = "ball goal team match score win coach league player season".split()
    science = "atom cell energy theory data lab experiment physics gene orbit".split()
    docs, labels = [], []
    for i in range(200):
        words = sports if i % 2 else science
        docs.append(" ".join(rng.choice(words, size=12)) + " " + " ".join(rng.choice(sports + science, size=3)))
        labels.append(i % 2)
    return docs, np.array(labels)


@pytest.fixture(scope="session")
def fitted_models(classification_data, regression_data, mixed_data, text_data) -> dict[str, tuple[Any, Any]]:
    """name -> (fitted estimator, input to predict on). Built once per session."""
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeRegressor

    X, y = classification_data
    Xr, yr = regression_data
    Xm, ym = mixed_data
    docs, yt = text_data
    models: dict[str, tuple[Any, Any]] = {
        "random_forest": (RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y), X),
        "gradient_boosting": (GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, y), X),
        "hist_gradient_boosting": (HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y), X),
        "decision_tree_regressor": (DecisionTreeRegressor(max_depth=8, random_state=0).fit(Xr, yr), Xr),
        "logistic_regression": (LogisticRegression(max_iter=500).fit(X, y), X),
        "scaler_svc": (
            Pipeline([("scale", StandardScaler()), ("svc", SVC(random_state=0))]).fit(X, y),
            X,
        ),
        "column_transformer": (
            Pipeline(
                [
                    (
                        "prep",
                        ColumnTransformer(
                            [
                                ("num", StandardScaler(), [0, 1]),
                                ("cat", OneHotEncoder(handle_unknown="ignore"), [2, 3]),
                            ]
                        ),
                    ),
                    ("clf", LogisticRegression(max_iter=500)),
                ]
            ).fit(Xm, ym),
            Xm,
        ),
        "tfidf_logreg": (make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=500)).fit(docs, yt), docs),
        "kmeans": (KMeans(n_clusters=4, n_init=3, random_state=0).fit(X), X),
        "knn_kd_tree": (KNeighborsClassifier(n_neighbors=5, algorithm="kd_tree").fit(X, y), X),
        "grid_search": (
            GridSearchCV(
                RandomForestClassifier(n_estimators=10, random_state=0),
                {"max_depth": [3, None]},
                cv=3,
            ).fit(X, y),
            X,
        ),
    }
    return models
