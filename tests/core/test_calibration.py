"""The duplicate threshold measured on a library's own photos."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from simviewer.core import calibration as calib
from simviewer.core.embedder import Embedder
from simviewer.core.library import Library, final_summary

from ..conftest import make_photo, write_jpeg


def test_threshold_sits_in_the_gap_between_separated_sets():
    pos = [0.97, 0.95, 0.99, 0.93]
    neg = [0.70, 0.81, 0.85]
    t, sep = calib.pick_threshold(pos, neg)
    assert sep == 1.0
    assert t == pytest.approx((0.85 + 0.93) / 2)


def test_overlapping_sets_are_not_reliable():
    rng = np.random.default_rng(0)
    pos = rng.normal(0.995, 0.002, 400)
    neg = rng.normal(0.994, 0.002, 200)  # an untrained network: everything scores alike
    t, sep = calib.pick_threshold(pos, neg)
    assert sep < calib.MIN_SEPARATION
    assert 0.98 < t < 1.0


def test_threshold_balances_errors_when_sets_overlap_a_little():
    pos = [0.9] * 90 + [0.45] * 10  # a few edits destroyed their photo
    neg = [0.5] * 95 + [0.95] * 5  # a few real duplicates among the k-th neighbours
    t, sep = calib.pick_threshold(pos, neg)
    assert t == pytest.approx((0.5 + 0.9) / 2)  # the outliers on either side do not move it
    assert sep == pytest.approx(0.9 - 0.05)


def test_no_negatives_gives_a_threshold_below_every_duplicate():
    t, sep = calib.pick_threshold([0.96, 0.98], [])
    assert t < 0.96 and sep == 1.0


def test_edits_change_the_photo_but_keep_a_picture():
    im = make_photo(3, (320, 240))
    rng = random.Random(0)
    for name, edit in calib.EDITS.items():
        out = edit(im, rng)
        assert out.mode == "RGB" and min(out.size) >= 16, name
        same_size = out.size == im.size
        assert not same_size or np.abs(np.asarray(out, np.int16) - np.asarray(im, np.int16)).mean() > 0.5, name


def test_stored_calibration_round_trips_and_belongs_to_its_model(tmp_path):
    cal = calib.Calibration("m|1", 0.91, 0.97, True, 3, 10, 2, (0.95, 0.97), (0.5,), 1.0, 123.0)
    calib.save(tmp_path, cal)
    assert calib.load(tmp_path, "m|1") == calib.Calibration.from_dict(cal.to_dict())
    assert calib.load(tmp_path, "other|1") is None
    (tmp_path / calib.CALIBRATION_FILE).write_text(json.dumps({"version": 1, "threshold": "x"}))
    assert calib.load(tmp_path, "m|1") is None  # damaged: measured again, never a crash


def test_recalibrates_when_the_model_or_the_library_size_changes():
    cal = calib.Calibration("m", 0.9, 1.0, True, 200, 1000, 10, (0.95,), (0.5,), 1.0, 0.0)
    assert not calib.needs_calibration(cal, "m", 1100)
    assert calib.needs_calibration(cal, "other", 1000)
    assert calib.needs_calibration(cal, "m", 2000)
    assert calib.needs_calibration(cal, "m", 400)
    assert calib.needs_calibration(None, "m", 10)


def _library(tmp_path, n: int):
    folder = tmp_path / "photos"
    for i in range(n):
        write_jpeg(folder / f"p{i:02d}.jpg", make_photo(100 + i))
    return Library(folder, tmp_path / "index")


def test_pretrained_model_separates_edited_copies_from_other_photos(tmp_path):
    lib = _library(tmp_path, 24)
    summary = final_summary(lib.update(Embedder("efficientnet_lite0", "imagenet")))
    cal = summary.calibration
    assert cal is not None and cal.reliable
    assert cal.photos == 24 and len(cal.positives) == 24 * calib.EDITS_PER_PHOTO and len(cal.negatives) == 24
    assert cal.true_positive_rate >= 0.9 and cal.false_positive_rate <= 0.1
    assert lib.calibration(cal.fingerprint) == calib.Calibration.from_dict(cal.to_dict())
    # An unchanged library is not calibrated again.
    again = final_summary(lib.update(Embedder("efficientnet_lite0", "imagenet")))
    assert again.calibration.created == cal.created


def test_calibration_embeds_only_the_edited_copies_of_an_indexed_library(tmp_path):
    class Counting(Embedder):
        images = 0

        def embed_images(self, images, batch_size=32):
            Counting.images += len(images)
            return super().embed_images(images, batch_size)

    lib = _library(tmp_path, 10)
    cal = final_summary(lib.update(Counting("resnet18", "none"))).calibration
    # The photos and their turned copies were embedded while indexing; calibration reuses them.
    assert cal.photos == 10 and Counting.images == 10 * calib.EDITS_PER_PHOTO


def test_sure_level_is_the_median_edited_copy_never_below_the_threshold():
    def cal(threshold, positives):
        return calib.Calibration("m", threshold, 1.0, True, 3, 3, 2, positives, (0.5,), 1.0, 0.0)

    # Half the library's edited copies score at least this: a pair there is as alike as a copy.
    assert cal(0.64, (0.70, 0.83, 0.90, 0.95, 0.99)).sure_level == pytest.approx(0.90)
    assert cal(0.64, (0.80, 0.90)).sure_level == pytest.approx(0.85)
    # Edits that wrecked most photos do not pull it under the threshold.
    assert cal(0.64, (0.40, 0.50, 0.90)).sure_level == 0.64
    assert cal(0.64, ()).sure_level == 1.0  # no edited copies: only a perfect score is sure
    stored = calib.Calibration.from_dict(cal(0.64, (0.70, 0.83, 0.90)).to_dict())
    assert stored.sure_level == pytest.approx(0.83)  # derived, not stored


def test_different_photo_is_the_kth_neighbour_unless_a_cluster_of_more_than_k_ends_in_a_drop():
    flat_tail = [0.97, 0.95, 0.9] + [0.6 - 0.001 * i for i in range(40)]
    assert calib.past_cluster(flat_tail, k=10) == pytest.approx(flat_tail[9])  # three look-alikes: k-th
    dozen_copies = [0.9 - 0.01 * i for i in range(12)] + [0.55 - 0.001 * i for i in range(30)]
    # The 10th neighbour of a photo saved a dozen times is one of its copies (0.81): the first
    # photo after the drop is its "different photo".
    assert calib.past_cluster(dozen_copies, k=10) == pytest.approx(0.55)
    assert calib.past_cluster([0.9, 0.5], k=10) == pytest.approx(0.5)  # fewer than k others: the farthest


def test_a_calibration_of_an_older_kind_is_measured_again(tmp_path):
    cal = calib.Calibration("m|1", 0.91, 0.97, True, 3, 10, 2, (0.95, 0.97), (0.5,), 1.0, 123.0)
    old = {**cal.to_dict(), "version": 1}  # negatives were plain k-th neighbours then
    (tmp_path / calib.CALIBRATION_FILE).write_text(json.dumps(old))
    assert calib.load(tmp_path, "m|1") is None
