"""``simviewer dedup`` reports on stdout (``--json -``, ``--csv -``), run in-process through main."""

from __future__ import annotations

import csv
import io
import json

import pytest

from simviewer.cli import main

from ..conftest import EDITS, make_photo, write_jpeg


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Two originals with a half-size copy each and a loner, indexed once for every test here."""
    tmp = tmp_path_factory.mktemp("dedup_cli")
    root = tmp / "photos"
    for i in range(2):
        im = make_photo(500 + i)
        write_jpeg(root / f"o{i}.jpg", im)
        write_jpeg(root / "edits" / f"o{i}_small.jpg", EDITS["resized"](im))
    write_jpeg(root / "alone.jpg", make_photo(599))
    common = ["--index-dir", str(tmp / "idx"), "--model", "resnet18", "--weights", "none"]
    assert main(["index", str(root), *common]) == 0
    return root, [*common, "--threshold", "0.998"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("json_arg", [["--json", "-"], ["--json"]])
def test_json_to_stdout_with_a_dry_run_keeps_the_summary_on_stderr(indexed, capsys, tmp_path, monkeypatch, json_arg):
    root, common = indexed
    monkeypatch.chdir(tmp_path)  # a file named "-" would land here
    code, out, err = run(capsys, "dedup", str(root), *common, *json_arg, "--dry-run", "--move-to",
                         str(tmp_path / "dups"))
    assert code == 0
    data = json.loads(out)  # stdout is the report and nothing else
    assert data["threshold"] == 0.998
    assert sorted(sorted(it["path"].rsplit("/", 1)[-1] for it in g["items"]) for g in data["groups"]) == [
        ["o0.jpg", "o0_small.jpg"], ["o1.jpg", "o1_small.jpg"]]
    assert "2 groups of near-duplicates" in err and "dry run: would move 2 files" in err
    assert not (tmp_path / "-").exists() and not (tmp_path / "dups").exists()
    assert (root / "edits" / "o0_small.jpg").exists()


def test_csv_to_stdout_and_json_to_a_file(indexed, capsys, tmp_path):
    root, common = indexed
    report = tmp_path / "r.json"
    code, out, err = run(capsys, "dedup", str(root), *common, "--csv", "-", "--json", str(report))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and {r["keep"] for r in rows} == {"0", "1"}
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in rows if r["keep"] == "1") == ["o0.jpg", "o1.jpg"]
    assert len(json.loads(report.read_text())["groups"]) == 2
    assert "2 groups of near-duplicates" in err and "keep " not in out


def test_a_file_report_leaves_the_listing_on_stdout(indexed, capsys, tmp_path):
    root, common = indexed
    code, out, err = run(capsys, "dedup", str(root), *common, "--json", str(tmp_path / "r.json"))
    assert code == 0 and "2 groups of near-duplicates" in out and out.count("\nkeep ") + out.startswith("keep ") == 2
    assert json.loads((tmp_path / "r.json").read_text())["threshold"] == 0.998


def test_two_reports_cannot_share_stdout(indexed, capsys):
    root, common = indexed
    code, out, err = run(capsys, "dedup", str(root), *common, "--json", "-", "--csv", "-")
    assert code == 1 and out == ""
    assert "only one report can go to stdout" in err


def test_raw_jpeg_pairs_are_left_alone_unless_pairs_keeps_one_kind(capsys, tmp_path):
    import numpy as np

    from ..rawfiles import dng_bytes, jpeg_preview

    root, dest = tmp_path / "photos", tmp_path / "moved"
    shot = make_photo(700)
    (root / "cam").mkdir(parents=True)
    (root / "cam" / "IMG_7.DNG").write_bytes(dng_bytes(np.asarray(shot, np.float32) / 255, jpeg_preview(shot)))
    write_jpeg(root / "cam" / "IMG_7.JPG", shot)
    write_jpeg(root / "alone.jpg", make_photo(701))
    common = ["--index-dir", str(tmp_path / "idx"), "--model", "resnet18", "--weights", "none"]
    assert main(["index", str(root), *common]) == 0
    common += ["--threshold", "0.995"]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    # The RAW and its JPEG are one shot, not duplicates: a clean-up of duplicates moves neither.
    code, out, err = run(capsys, "dedup", str(root), *common, "--move-to", str(dest))
    assert code == 0 and "0 groups of near-duplicates" in out and not dest.exists()
    code, out, err = run(capsys, "dedup", str(root), *common, "--pairs", "keep-raw")
    assert code == 1 and "needs --trash or --move-to" in err
    code, out, err = run(capsys, "dedup", str(root), *common, "--pairs", "keep-raw", "--dry-run",
                         "--move-to", str(dest))
    assert code == 0 and "dry run: would move 1 files of RAW+JPEG pairs" in out and "keeping the RAW" in out
    assert f"{root / 'cam' / 'IMG_7.JPG'}  (keeps IMG_7.DNG)" in out and not dest.exists()
    code, out, err = run(capsys, "dedup", str(root), *common, "--pairs", "keep-raw", "--move-to", str(dest))
    assert code == 0 and (dest / "cam" / "IMG_7.JPG").is_file()
    assert (root / "cam" / "IMG_7.DNG").is_file() and not (root / "cam" / "IMG_7.JPG").exists()
    assert (root / "alone.jpg").is_file()  # a JPEG without a RAW is no pair
    code, out, err = run(capsys, "dedup", str(root), *common, "--undo")
    assert code == 0 and sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == files
