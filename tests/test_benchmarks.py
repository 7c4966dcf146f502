"""Smoke runs of the benchmark scripts on tiny synthetic folders: they must keep working.

No timing is asserted here; figures come from full runs quoted in the README.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import ImageOps

from .conftest import make_photo, write_jpeg

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args) -> str:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def photos(folder: Path, n: int) -> Path:
    for i in range(n):
        write_jpeg(folder / f"{i}.jpg", make_photo(i))
    return folder


def ratio(text: str) -> float:
    m = re.search(r"ratio: (?:set-up )?([0-9.]+)x", text)
    assert m, text
    return float(m.group(1))


def test_bench_index_smoke(tmp_path):
    photos(tmp_path / "src", 6)
    run("bench_index.py", "--make-12mp", tmp_path / "big", "--source", tmp_path / "src", "--count", 3)
    assert len(list((tmp_path / "big").glob("*.jpg"))) == 3
    out = run("bench_index.py", tmp_path / "big", "--model", "resnet18", "--naive-limit", 3)
    assert ratio(out) > 0 and "re-index with nothing changed" in out


def test_bench_ingest_smoke(tmp_path):
    photos(tmp_path / "src", 4)
    out = run("bench_ingest.py", tmp_path / "src", "--model", "resnet18", "--profile", "--profile-limit", 4,
              "--repeat", 1, "--batch-sizes", 4, "--variants", "naive,threads,processes", "--rounds", 1,
              "--json", tmp_path / "ingest.json")
    for words in ("hash blake2b", "decode: full size", "network alone", "bound on", "peak RSS",
                  "+ 2 x" if sys.platform.startswith("linux") else "processes"):
        assert words in out, out
    assert ratio(out) > 0


def test_bench_reindex_smoke(tmp_path):
    photos(tmp_path / "src", 4)
    out = run("bench_reindex.py", "--source", tmp_path / "src", "-n", 40, "--repeat", 1)
    assert ratio(out) > 0 and "first index of 40 files" in out


def test_bench_gui_stall_smoke(tmp_path):
    pytest.importorskip("PySide6")
    photos(tmp_path / "src", 5)
    out = run("bench_gui_stall.py", "--source", tmp_path / "src", "--count", 12)
    assert ratio(out) > 0 and "12 in the grid at the end" in out


def test_bench_grid_scroll_smoke(tmp_path):
    pytest.importorskip("PySide6")
    photos(tmp_path / "src", 3)
    out = run("bench_grid_scroll.py", "--source", tmp_path / "src", "-n", 300)
    assert ratio(out) > 0 and "300 photos in the grid" in out


def test_bench_explain_smoke(tmp_path):
    photos(tmp_path / "src", 4)
    out = run("bench_explain.py", tmp_path / "src", "--model", "resnet18", "--pairs", 2)
    assert ratio(out) > 0 and "s per pair" in out


def test_bench_gradcam_checks_smoke():
    out = run("bench_gradcam_checks.py", "--model", "resnet18", "--layers", "layer4", "--pairs", 2)
    assert ratio(out) > 0 and "patch mass" in out and "deletion drop" in out


def test_make_neardup_set_smoke(tmp_path):
    src = tmp_path / "src"
    rows = ["path,group"]
    for i in range(4):
        write_jpeg(src / f"p{i}.jpg", make_photo(i))
        rows.append(f"p{i}.jpg,obj{i // 2}")
    (src / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    out = run("make_neardup_set.py", src, tmp_path / "set")
    assert "2 duplicate groups of 9, 2 distractors" in out
    labels = (tmp_path / "set" / "labels.csv").read_text().splitlines()
    assert labels[0] == "path,group" and len(labels) == 1 + 20
    assert all((tmp_path / "set" / line.split(",")[0]).is_file() for line in labels[1:])


def test_bench_regroup_smoke():
    out = run("bench_regroup.py", "-n", 200, "--dim", 32)
    assert ratio(out) > 0 and "200 photos" in out


def test_bench_train_smoke(tmp_path):
    coil, uk = tmp_path / "coil", tmp_path / "uk"
    rows = ["path,group"]
    for c in range(3):
        for i in range(8):
            write_jpeg(coil / f"obj{c}__{i * 5}.jpg", make_photo(40 + c, (56, 48)).rotate(i * 5))
            rows.append(f"obj{c}__{i * 5}.jpg,obj{c}")
    (coil / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    rows = ["path,group"]
    for i in range(8):
        write_jpeg(uk / f"p{i}.jpg", make_photo(60 + i, (64, 48)))
        rows.append(f"p{i}.jpg,obj{i // 4}")
    (uk / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    out = run("bench_train.py", "--quick", "--coil", coil, "--ukbench", uk, "--out", tmp_path / "out",
              "--threads", 2)
    for words in ("supervised, ", "supervised on the first half", "self-supervised, ", "pHash",
                  "resnet50 bf16", "images/s"):
        assert words in out, out
    # A checkpoint exists exactly when the run says an epoch beat the start.
    saved = (tmp_path / "out" / "coil-resnet18-supervised.pt").is_file()
    row = next(line for line in out.splitlines() if "COIL, held-out views" in line and "supervised, " in line)
    assert saved == ("no epoch beat the start" not in row), row
    assert (tmp_path / "out" / "neardup" / "labels.csv").is_file()


def test_bench_ann_smoke():
    out = run("bench_ann.py", "-n", 2000, "--dim", 32, "--queries", 20, "--compare-build")
    assert ratio(out) > 0 and "naive build" in out and "ours  build" in out and "recall@5" in out


def test_bench_click_smoke(tmp_path):
    pytest.importorskip("PySide6")
    photos(tmp_path / "src", 3)
    out = run("bench_click.py", "--source", tmp_path / "src", "-n", 300)
    assert ratio(out) > 0 and "cluster mates" in out


def test_bench_compact_smoke(tmp_path):
    folder = photos(tmp_path / "set", 6)
    (folder / "labels.csv").write_text("path,group\n" + "".join(f"{i}.jpg,g{i // 2}\n" for i in range(6)))
    out = run("bench_compact.py", folder, "--labels", folder / "labels.csv", "--model", "resnet18", "--pca", 4)
    assert "float16" in out and "pca-4" in out and "recall@10 vs float32" in out


def test_bench_quality_smoke(tmp_path):
    data = tmp_path / "data"
    uk, coil, idd = data / "ukbench_subset56", data / "coil100_subset17", data / "imagededup_tests"
    rows = ["path,group"]
    for i in range(12):
        write_jpeg(uk / f"ukbench{i:05d}.jpg", make_photo(100 + i, (160, 120)))
        rows.append(f"ukbench{i:05d}.jpg,obj{i // 4}")
    (uk / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    rows = ["path,group,angle_deg"]
    for c in range(3):
        for a in range(0, 360, 30):
            write_jpeg(coil / f"obj{c}__{a}.jpg", make_photo(200 + c, (64, 64)).rotate(a))
            rows.append(f"obj{c}__{a}.jpg,obj{c},{a}")
    (coil / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    rows = ["path,group,kind,note"]
    for i in range(4):
        write_jpeg(idd / "base_images" / f"b{i}.jpg", make_photo(300 + i, (160, 120)))
        rows.append(f"base_images/b{i}.jpg,g{i},original,")
    write_jpeg(idd / "b0_hflip.jpg", ImageOps.mirror(make_photo(300, (160, 120))))
    rows.append("b0_hflip.jpg,g0,hflip,")
    (idd / "b0_copy.jpg").write_bytes((idd / "base_images" / "b0.jpg").read_bytes())  # exact copy: left out
    rows.append("b0_copy.jpg,g0,original,")
    (idd / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append("broken.jpg,g1,corrupt,")
    write_jpeg(idd / "other.jpg", make_photo(400, (90, 90)))
    rows.append("other.jpg,none_other,unrelated,")
    (idd / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    out = run("bench_quality.py", "--quick", "--data", data, "--out", tmp_path / "out", "--configs", "r18-none,phash",
              "--edits", 5, "--json", tmp_path / "q.json")
    for words in ("machine:", "== ukbench", "== coil", "== imagededup", "ResNet-18 untrained, GeM + match", "pHash",
                  "ΔF1", "== retrieval", "mAP", "time per configuration"):
        assert words in out, out
    labels = (tmp_path / "out" / "imagededup" / "labels.csv").read_text()
    assert "given:hflip" in labels and "b0_copy" not in labels and "broken" not in labels
    report = json.loads((tmp_path / "q.json").read_text())
    assert set(report["sets"]) == {"ukbench", "coil", "imagededup"}
    assert set(report["retrieval"]["sets"]) == {"ukbench", "coil"}
    for s in report["sets"].values():
        assert {r["config"] for r in s["rows"]} == {"r18-none", "phash"}
        assert all(0.0 <= r["best"]["f1"] <= 1.0 for r in s["rows"])
