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
