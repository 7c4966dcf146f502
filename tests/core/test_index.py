"""Annoy index: cosine conversion, queries, manifest checks, crash-safe saves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simviewer.core import index as idx
from simviewer.core.index import AnnIndex, IndexMismatch, IndexMissing, angular_to_cosine

MODEL = {"fingerprint": "test|model|p1", "label": "Test model", "arch": "testnet", "weights": "none", "dim": 16}


def unit(rng, n, dim=16):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_angular_to_cosine_matches_dot_product():
    rng = np.random.default_rng(0)
    a, b = unit(rng, 50), unit(rng, 50)
    d = np.linalg.norm(a - b, axis=1)  # what Annoy's angular metric returns for unit vectors
    np.testing.assert_allclose(angular_to_cosine(d), (a * b).sum(1), atol=1e-6)
    assert angular_to_cosine(0.0) == 1.0 and angular_to_cosine(2.0) == -1.0


def test_trees_grow_with_n():
    assert idx.trees_for(10) == 10 and idx.trees_for(10_000) == 18 and idx.trees_for(1_000_000) == 34


def test_query_returns_exact_neighbours_best_first(tmp_path):
    rng = np.random.default_rng(1)
    vecs = unit(rng, 300)
    keys = [f"img{i}.jpg" for i in range(300)]
    index = AnnIndex.build_and_save(tmp_path, vecs, keys, MODEL)
    q = vecs[17] + 0.05 * unit(rng, 1)[0]
    res = index.query_vector(q, k=5)
    exact = np.argsort(-(vecs @ (q / np.linalg.norm(q))))[:5]
    assert [k for k, _ in res] == [keys[i] for i in exact]
    scores = [s for _, s in res]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores[0], vecs[17] @ (q / np.linalg.norm(q)), atol=1e-4)

    by_key = index.query_key("img17.jpg", k=3)
    assert "img17.jpg" not in [k for k, _ in by_key] and len(by_key) == 3
    assert index.query_vector(vecs[17], k=3, exclude="img17.jpg") == by_key
    np.testing.assert_allclose(index.vector("img5.jpg"), vecs[5], atol=1e-6)
    index.close()


def test_load_is_memory_mapped_and_checks_manifest(tmp_path):
    vecs = unit(np.random.default_rng(2), 20)
    AnnIndex.build_and_save(tmp_path, vecs, [str(i) for i in range(20)], MODEL).close()
    loaded = AnnIndex.load(tmp_path, expected_model="test|model|p1")
    assert loaded.count == 20 and loaded.dim == 16
    loaded.close()
    with pytest.raises(IndexMismatch, match="built with Test model"):
        AnnIndex.load(tmp_path, expected_model="resnet50|imagenet:X|p1")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatch, match="re-index"):
        AnnIndex.load(tmp_path)
    manifest["version"], manifest["dim"], manifest["model"]["dim"] = idx.FORMAT_VERSION, 32, 32
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatch, match="cannot load .*re-index"):
        AnnIndex.load(tmp_path)
    manifest["dim"], manifest["model"]["dim"], manifest["count"] = 16, 16, 21
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatch, match="holds 20 items of dim 16, the manifest says 21"):
        AnnIndex.load(tmp_path)
    with pytest.raises(IndexMissing, match="simviewer index"):
        AnnIndex.load(tmp_path / "nothing-here")


@pytest.mark.parametrize(
    "step", ["ann-written", "keys-written", "generation-renamed", "manifest-written", "manifest-replaced"]
)
def test_interrupted_save_leaves_a_loadable_index(tmp_path, monkeypatch, step):
    rng = np.random.default_rng(3)
    old = unit(rng, 10)
    AnnIndex.build_and_save(tmp_path, old, [f"old{i}" for i in range(10)], MODEL).close()

    def crash(at):
        if at == step:
            raise KeyboardInterrupt(f"killed at {at}")

    monkeypatch.setattr(idx, "_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        AnnIndex.build_and_save(tmp_path, unit(rng, 25), [f"new{i}" for i in range(25)], MODEL)
    monkeypatch.setattr(idx, "_checkpoint", lambda at: None)

    survivor = AnnIndex.load(tmp_path)
    # Before the manifest is replaced the old index is current; after, the new one is complete.
    expect_new = step == "manifest-replaced"
    assert survivor.count == (25 if expect_new else 10)
    assert survivor.all_keys()[0] == ("new0" if expect_new else "old0")
    survivor.close()

    # The next save succeeds and leaves exactly one generation behind.
    AnnIndex.build_and_save(tmp_path, unit(rng, 5), [f"n{i}" for i in range(5)], MODEL).close()
    assert AnnIndex.load(tmp_path).count == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [json.loads((tmp_path / "manifest.json").read_text())[
        "generation"], "manifest.json"]


def test_empty_index_loads_and_returns_nothing(tmp_path):
    index = AnnIndex.build_and_save(tmp_path, np.zeros((0, 16), np.float32), [], MODEL)
    assert index.count == 0 and index.query_vector(np.ones(16), k=5) == []


@pytest.mark.parametrize("on_disk", [False, True])
def test_streamed_vectors_build_the_same_index_in_ram_or_on_disk(tmp_path, monkeypatch, on_disk):
    if on_disk:
        monkeypatch.setattr(idx, "ON_DISK_BUILD_BYTES", 1)  # every forest is built in its file
    rng = np.random.default_rng(5)
    vecs = unit(rng, 200)
    keys = [f"img{i}.jpg" for i in range(200)]
    from_array = AnnIndex.build_and_save(tmp_path / "a", vecs, keys, MODEL)
    streamed = AnnIndex.build_and_save(tmp_path / "b", (v.tobytes() for v in vecs), keys, MODEL)
    for q in (3, 77, 150):
        assert streamed.query_key(keys[q], 5) == from_array.query_key(keys[q], 5)
        np.testing.assert_allclose(streamed.vector(keys[q]), vecs[q], atol=1e-6)
    from_array.close()
    streamed.close()


def test_a_short_stream_fails_and_leaves_the_previous_index(tmp_path):
    rng = np.random.default_rng(6)
    vecs = unit(rng, 50)
    keys = [f"img{i}.jpg" for i in range(50)]
    AnnIndex.build_and_save(tmp_path, vecs, keys, MODEL).close()
    with pytest.raises(ValueError, match="49 vectors but 50 keys"):
        AnnIndex.build_and_save(tmp_path, iter(vecs[:49]), keys, MODEL)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gen-")], "no half-built generation left"
    again = AnnIndex.load(tmp_path)
    assert again.count == 50 and again.query_key("img3.jpg", 1)
    again.close()
