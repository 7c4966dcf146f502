"""Evaluation metrics and the pHash baseline, on cases whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simviewer.core import dedup, evaluate

from ..conftest import EDITS, make_photo


def test_retrieval_metrics_on_a_known_ranking():
    groups = np.array(["a", "a", "b", "b"])
    sim = np.array([
        [1.0, 0.9, 0.8, 0.1],  # 0: its pair first -> AP 1
        [0.9, 1.0, 0.95, 0.2],  # 1: a wrong photo first, its pair second -> AP 1/2
        [0.8, 0.95, 1.0, 0.3],  # 2: pair (3) last of three -> AP 1/3
        [0.1, 0.2, 0.3, 1.0],  # 3: pair (2) first -> AP 1
    ])
    r = evaluate.retrieval(sim, groups)
    assert r.recall_at_1 == pytest.approx(0.5)
    assert r.recall_at_5 == 1.0
    assert r.mean_ap == pytest.approx((1 + 0.5 + 1 / 3 + 1) / 4)


def test_pair_scores_and_best_threshold():
    items = [dedup.Item(f"{k}.jpg", Path(f"/x/{k}.jpg"), k, 10, 0, 10, 10, None) for k in "abcd"]
    groups = np.array(["g1", "g1", "g2", "g3"])
    sim = np.array([[1, .97, .90, .10], [.97, 1, .92, .10], [.90, .92, 1, .10], [.1, .1, .1, 1.]])
    report = evaluate.evaluate_method("test", items, sim, groups, threshold=0.85)
    # At 0.85, a is the keeper of {a, b, c}: pairs ab, ac, bc predicted; only ab is true.
    assert (report.at_threshold.precision, report.at_threshold.recall) == (pytest.approx(1 / 3), 1.0)
    assert report.best.f1 == 1.0 and 0.92 < report.best.threshold <= 0.97


def test_phash_survives_resizing_and_recompression_but_not_other_pictures():
    base = make_photo(1)
    h = evaluate.phash(base)
    assert h.shape == (63,)
    for edit in ("resized", "recompressed"):
        assert (evaluate.phash(EDITS[edit](base)) != h).sum() <= 6
    assert np.mean([(evaluate.phash(make_photo(100 + i)) != h).sum() for i in range(10)]) > 20


def test_labels_need_the_header(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,cluster\na.jpg,1\n")
    with pytest.raises(evaluate.EvalError, match="path,group"):
        evaluate.read_labels(bad)


def test_model_similarity_takes_the_best_of_a_photo_and_its_turned_copies():
    items = [dedup.Item(f"{k}.jpg", Path(f"/x/{k}.jpg"), k, 10, 0, 10, 10, None) for k in "abc"]
    # b is a mirrored a: as they are they are orthogonal; a's mirrored copy is b's vector.
    vectors = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.6, 0.0, 0.8]])
    plain = evaluate.model_similarity(vectors, items)
    assert plain[0, 1] == pytest.approx(0.0) and plain[0, 2] == pytest.approx(0.6)  # normalised first
    mirrored = {"a": np.array([0.0, 1.0, 0.0])}  # c has no copy (unreadable): its own vector, no extra match
    sim = evaluate.model_similarity(vectors, items, {"mirror": mirrored})
    assert sim[0, 1] == pytest.approx(1.0) and sim[1, 0] == pytest.approx(1.0)  # symmetric
    assert sim[0, 2] == pytest.approx(0.6) and sim[1, 2] == pytest.approx(0.0)
    assert np.allclose(np.diag(sim), 1.0)
