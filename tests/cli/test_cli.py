"""The command line end to end, through real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from ..conftest import EDITS, jpeg_bytes, make_photo, write_jpeg


def simviewer(*args, env=None, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "simviewer", *map(str, args)], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "photos"
    for i in range(6):
        write_jpeg(root / f"p{i}.jpg", make_photo(60 + i))
    write_jpeg(root / "sub" / "p3_small.jpg", EDITS["resized"](make_photo(63)))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return root


def test_help_lists_commands():
    out = simviewer("--help")
    assert "usage: simviewer" in out.stdout and "index" in out.stdout and "query" in out.stdout


def test_unknown_word_that_is_not_a_folder_is_bad_usage():
    proc = simviewer("idnex", check=False)
    assert proc.returncode == 2 and "neither a command" in proc.stderr


def test_bad_usage_exits_2():
    assert simviewer("index", check=False).returncode == 2
    assert simviewer("query", "x.jpg", check=False).returncode == 2  # --folder missing
    assert simviewer("index", ".", "--model", "vgg", check=False).returncode == 2


def test_index_then_query_json(library, tmp_path):
    idx = tmp_path / "idx"
    out = simviewer("index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    assert "8 images: 7 embedded, 0 reused, 1 skipped, 0 removed; the index holds 7" in out.stdout
    assert "Skipped files:" in out.stdout and "broken.jpg" in out.stdout
    assert "untrained" in out.stdout

    out = simviewer("index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx, "--json")
    summary = json.loads(out.stdout)
    assert summary["embedded"] == 0 and summary["reused"] == 7 and summary["index_rebuilt"] is False
    assert [s["path"] for s in summary["skipped"]] == ["broken.jpg"]

    out = simviewer("query", library / "sub" / "p3_small.jpg", "--folder", library, "--index-dir", idx,
                    "-k", "3", "--json")
    results = json.loads(out.stdout)
    assert len(results) == 3 and set(results[0]) == {"path", "score"}
    assert results[0]["path"] == str(library / "p3.jpg")
    assert all(os.path.isabs(r["path"]) for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert str(library / "sub" / "p3_small.jpg") not in [r["path"] for r in results]

    # An image from outside the folder is embedded on the fly and not added.
    outside = write_jpeg(tmp_path / "q.jpg", EDITS["recompressed"](make_photo(64)))
    out = simviewer("query", outside, "--folder", library, "--index-dir", idx, "-k", "2")
    assert str(library / "p4.jpg") in out.stdout.splitlines()[1] and "untrained" in out.stdout


def test_index_without_a_model_keeps_the_folders_and_a_new_folder_gets_the_bundled_one(library, tmp_path):
    idx = tmp_path / "idx"
    simviewer("index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    again = json.loads(simviewer("index", library, "--index-dir", idx, "--json").stdout)
    assert "ResNet-18" in again["model"] and again["embedded"] == 0 and again["index_rebuilt"] is False
    assert again["model_reason"] == "the model this folder was indexed with"

    # A new folder, offline (the test environment), no ResNet-50 weights cached: the bundled model,
    # with no question asked and the reason in the summary.
    out = simviewer("index", library, "--index-dir", tmp_path / "new").stdout
    assert "[EfficientNet-Lite0 · ImageNet (installed with simviewer)]" in out
    assert "model: ResNet-50 ImageNet weights are not cached and cannot be downloaded" in out
    assert "duplicates: threshold" in out and "untrained" not in out


def test_index_with_decoder_processes_matches_threads(library, tmp_path):
    def index(decoders):
        idx = tmp_path / decoders
        summary = json.loads(simviewer("index", library, "--model", "resnet18", "--weights", "none",
                                       "--index-dir", idx, "--decoders", decoders, "--json").stdout)
        assert summary["embedded"] == 7 and [s["path"] for s in summary["skipped"]] == ["broken.jpg"]
        return json.loads(simviewer("query", library / "sub" / "p3_small.jpg", "--folder", library,
                                    "--index-dir", idx, "-k", "6", "--json").stdout)

    assert index("processes") == index("threads")
    bad = simviewer("index", library, "--decoders", "fibers", check=False)
    assert bad.returncode == 2 and "threads" in bad.stderr


def test_failures_exit_1_with_one_line_reason(library, tmp_path):
    proc = simviewer("query", library / "p0.jpg", "--folder", library, "--index-dir", tmp_path / "none", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("simviewer: error:") and "simviewer index" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = simviewer("index", tmp_path / "missing", "--weights", "none", check=False)
    assert proc.returncode == 1 and "not a folder" in proc.stderr
    proc = simviewer("query", tmp_path / "nope.jpg", "--folder", library, check=False)
    assert proc.returncode == 1 and "no such image" in proc.stderr


def test_offline_imagenet_fails_cleanly(library, tmp_path):
    env = os.environ.copy()
    env["TORCH_HOME"] = str(tmp_path / "empty-torch-home")
    env["https_proxy"] = env["HTTPS_PROXY"] = "http://127.0.0.1:9"  # a port nothing listens on
    proc = simviewer("index", library, "--model", "resnet18", "--index-dir", tmp_path / "idx", env=env, check=False)
    assert proc.returncode == 1
    assert "--weights none" in proc.stderr and "simviewer train" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_query_with_another_model_reindexes_first(library, tmp_path):
    idx = tmp_path / "idx"
    simviewer("index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    out = simviewer("query", library / "p1.jpg", "--folder", library, "--index-dir", idx, "--model", "resnet34",
                    "--weights", "none", "--json")
    assert len(json.loads(out.stdout)) == 6
    assert json.loads((idx / "manifest.json").read_text())["model"]["arch"] == "resnet34"


# The photos' own vectors; each also has mirrored/rotated copies (model "<fingerprint>#<variant>").
PRIMARY_VECTORS = "SELECT COUNT(*) FROM embeddings WHERE model NOT LIKE '%#%'"


def test_sigkill_mid_run_keeps_old_index_and_finished_embeddings(library, tmp_path):
    idx = tmp_path / "idx"
    base = ["index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx]
    simviewer(*base)
    for i in range(40):
        write_jpeg(library / "more" / f"m{i:02d}.jpg", make_photo(900 + i))
    proc = subprocess.Popen([sys.executable, "-m", "simviewer", *map(str, base), "--batch-size", "1",
                             "--workers", "1", "--precision", "fp32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = idx / "catalog.sqlite"
    deadline = time.time() + 120
    stored = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            with sqlite3.connect(db, timeout=5) as con:
                stored = con.execute(PRIMARY_VECTORS).fetchone()[0]
            if stored >= 7 + 3:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    # The previous index is intact and still answers queries.
    out = simviewer("query", library / "p2.jpg", "--folder", library, "--index-dir", idx, "-k", "50", "--json")
    assert len(json.loads(out.stdout)) == 6
    with sqlite3.connect(db) as con:
        kept = con.execute(PRIMARY_VECTORS).fetchone()[0]
    assert kept >= 10
    summary = json.loads(simviewer(*base, "--json").stdout)
    assert summary["embedded"] == 40 - (kept - 7)  # only what the killed run had not stored
    assert summary["indexed"] == 47


def test_explain_writes_the_pair_side_by_side(library, tmp_path):
    from PIL import Image

    out = tmp_path / "why" / "pair.png"
    proc = simviewer("explain", library / "p3.jpg", library / "sub" / "p3_small.jpg", "-o", out,
                     "--model", "resnet18", "--weights", "none", "--height", "200")
    assert "cosine" in proc.stdout and "untrained" in proc.stdout
    with Image.open(out) as im:
        # two 4:3 photos at height 200, a 12 px gap, a caption band of 36 px
        assert im.size == (267 + 12 + 267, 236)
    bad = simviewer("explain", library / "p3.jpg", library / "p4.jpg", "-o", out, "--model", "resnet18",
                    "--weights", "none", "--layer", "nope", check=False)
    assert bad.returncode == 1 and "no layer named 'nope'" in bad.stderr


def test_dedup_json_contract_dry_run_move_and_undo(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        im = make_photo(300 + i)
        write_jpeg(root / f"o{i}.jpg", im)
        write_jpeg(root / "edits" / f"o{i}_small.jpg", EDITS["resized"](im))
    write_jpeg(root / "alone.jpg", make_photo(399))
    idx = tmp_path / "idx"
    common = ["--index-dir", idx, "--model", "resnet18", "--weights", "none", "--threshold", "0.998"]
    report = tmp_path / "report.json"
    out = simviewer("dedup", root, *common, "--json", report, "--csv", tmp_path / "report.csv")
    assert "3 groups of near-duplicates" in out.stdout and "untrained" in out.stdout
    data = json.loads(report.read_text())
    assert set(data) == {"threshold", "groups"} and data["threshold"] == 0.998
    assert len(data["groups"]) == 3
    for g in data["groups"]:
        assert set(g) == {"keep", "items"}
        paths = [it["path"] for it in g["items"]]
        assert g["keep"] == paths[0] and all(os.path.isabs(p) for p in paths)
        assert all(set(it) == {"path", "score", "sure"} for it in g["items"])
        assert sorted(os.path.basename(p) for p in paths)[0].removesuffix(".jpg") + "_small.jpg" == \
            os.path.basename(paths[1])
    assert (tmp_path / "report.csv").read_text().splitlines()[0].startswith("group,path,keep,score")

    dry = simviewer("dedup", root, *common, "--move-to", tmp_path / "dups", "--dry-run")
    assert "would move 3 files" in dry.stdout and not (tmp_path / "dups").exists()

    moved = simviewer("dedup", root, *common, "--move-to", tmp_path / "dups")
    assert sorted(p.name for p in (tmp_path / "dups" / "edits").iterdir()) == [
        "o0_small.jpg", "o1_small.jpg", "o2_small.jpg"]
    assert "undo with: simviewer dedup" in moved.stdout
    # The index followed the moves: a query no longer returns them.
    hits = json.loads(simviewer("query", root / "o1.jpg", "--folder", root, "--index-dir", idx, "-k", "10",
                                "--json").stdout)
    assert not any("_small" in h["path"] for h in hits) and len(hits) == 3

    back = simviewer("dedup", root, *common, "--undo")
    assert "put back 3 files" in back.stdout
    assert sorted(p.name for p in (root / "edits").iterdir()) == ["o0_small.jpg", "o1_small.jpg", "o2_small.jpg"]
    hits = json.loads(simviewer("query", root / "o1.jpg", "--folder", root, "--index-dir", idx, "-k", "10",
                                "--json").stdout)
    assert hits[0]["path"] == str(root / "edits" / "o1_small.jpg")


def test_dedup_moves_sure_duplicates_and_similar_ones_only_when_asked(tmp_path):
    root = tmp_path / "photos"
    im = make_photo(310)
    write_jpeg(root / "orig.jpg", im)
    (root / "orig_copy.jpg").write_bytes((root / "orig.jpg").read_bytes())
    write_jpeg(root / "look" / "orig_small.jpg", EDITS["resized"](im))
    for i in range(3):
        write_jpeg(root / f"other{i}.jpg", make_photo(320 + i))
    idx = tmp_path / "idx"
    model = ["--index-dir", idx, "--model", "resnet18", "--weights", "none"]
    common = [*model, "--threshold", "0.998"]
    simviewer("index", root, *model)
    # A calibration whose edited copies are all more alike than the half-size copy: that one is
    # then only similar to its original, as another photo of the same subject would be.
    (cal_file,) = idx.rglob("calibration.json")
    cal = json.loads(cal_file.read_text())
    cal["positives"] = [0.99999]
    cal_file.write_text(json.dumps(cal))

    report = tmp_path / "r.json"
    out = simviewer("dedup", root, *common, "--json", report)
    lines = out.stdout.splitlines()
    assert any("orig_small.jpg" in ln and ln.endswith("(similar, check)") for ln in lines)
    assert any("orig_copy.jpg" in ln and "check" not in ln for ln in lines)
    assert "1 sure duplicates" in out.stdout and "1 similar to check" in out.stdout
    (group,) = json.loads(report.read_text())["groups"]
    assert {os.path.basename(it["path"]): it["sure"] for it in group["items"]} == {
        "orig.jpg": True, "orig_copy.jpg": True, "orig_small.jpg": False}

    moved = simviewer("dedup", root, *common, "--move-to", tmp_path / "dups")
    assert sorted(p.relative_to(tmp_path / "dups").as_posix() for p in (tmp_path / "dups").rglob("*.jpg")) == [
        "orig_copy.jpg"]
    assert (root / "look" / "orig_small.jpg").exists() and "--include-similar" in moved.stdout
    simviewer("dedup", root, *common, "--undo")
    assert (root / "orig_copy.jpg").exists()

    simviewer("dedup", root, *common, "--move-to", tmp_path / "all", "--include-similar")
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.jpg")) == [
        "look/orig_small.jpg", "orig_copy.jpg"]
    assert (root / "orig.jpg").exists()


def test_dedup_invariant_finds_a_rotated_copy_from_the_command_line(tmp_path):
    root = tmp_path / "photos"
    im = make_photo(121)
    write_jpeg(root / "orig.jpg", im)
    write_jpeg(root / "rot.jpg", im.rotate(90, expand=True))
    write_jpeg(root / "other.jpg", make_photo(122))
    common = ["--index-dir", tmp_path / "idx", "--model", "resnet18", "--weights", "none", "--threshold", "0.998"]

    def pairs(*extra):
        report = tmp_path / "r.json"
        simviewer("dedup", root, *common, *extra, "--json", report)
        return [sorted(os.path.basename(it["path"]) for it in g["items"])
                for g in json.loads(report.read_text())["groups"]]

    assert pairs("--no-invariant") == []
    assert pairs() == [["orig.jpg", "rot.jpg"]]  # matching turned copies is the default


def test_dedup_bad_values_are_reported():
    proc = simviewer("dedup", ".", "--threshold", "3", check=False)
    assert proc.returncode == 1 and "--threshold must be a cosine" in proc.stderr
    proc = simviewer("dedup", ".", "--trash", "--move-to", "x", check=False)
    assert proc.returncode == 2


def test_eval_reports_dedup_retrieval_and_phash(tmp_path):
    root = tmp_path / "photos"
    rows = ["path,group"]
    for i in range(4):
        im = make_photo(500 + i)
        for name, edit in (("orig", lambda x: x), ("small", EDITS["resized"]), ("crop", EDITS["cropped"])):
            write_jpeg(root / f"{name}{i}.jpg", edit(im))
            rows.append(f"{name}{i}.jpg,g{i}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = simviewer("eval", root, "--labels", tmp_path / "labels.csv", "--index-dir", tmp_path / "idx",
                    "--model", "resnet18", "--weights", "none", "--threshold", "0.998", "--json")
    data = json.loads(out.stdout)
    assert (data["photos"], data["groups"], data["duplicate_pairs"]) == (12, 4, 12)
    cnn, ph = data["methods"]
    assert ph["method"] == "pHash" and "untrained" in cnn["method"]
    assert cnn["retrieval"]["recall@1"] == 1.0 and cnn["best"]["f1"] == 1.0
    assert cnn["best"]["f1"] >= cnn["dedup"]["f1"] and ph["best"]["f1"] >= ph["dedup"]["f1"]


# -- in-process runs (no interpreter start-up) ----------------------------------------------------
def run_main(capsys, *args) -> tuple[int, str, str]:
    from simviewer import cli

    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_index_without_model_reuses_the_folders_untrained_model_in_process(library, tmp_path, capsys, monkeypatch):
    from simviewer.core import embedder

    idx = tmp_path / "idx"
    assert run_main(capsys, "index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)[0] == 0

    def no_default(*a, **k):
        raise AssertionError("the default model (ResNet-50 ImageNet) was asked for")

    monkeypatch.setattr(embedder, "default_embedder", no_default)
    monkeypatch.setattr(embedder, "default_model", no_default)
    rc, out, _ = run_main(capsys, "index", library, "--index-dir", idx, "--json")
    summary = json.loads(out)
    assert rc == 0 and summary["model"] == "ResNet-18 · untrained (random init)"
    assert summary["model_reason"] == "the model this folder was indexed with" and summary["embedded"] == 0


def test_query_several_images_in_one_run_prints_one_json_line_each(library, tmp_path, capsys):
    idx = tmp_path / "idx"
    run_main(capsys, "index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    outside = write_jpeg(tmp_path / "q.jpg", EDITS["recompressed"](make_photo(64)))
    images = [library / "sub" / "p3_small.jpg", outside, tmp_path / "missing.jpg", library / "broken.jpg"]
    rc, out, _ = run_main(capsys, "query", *images, "--folder", library, "--index-dir", idx, "-k", "2", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 1  # two of the four could not be looked up; the others were
    assert [d["image"] for d in lines] == [str(p) for p in images]
    assert lines[0]["results"][0]["path"] == str(library / "p3.jpg") and len(lines[0]["results"]) == 2
    assert lines[1]["results"][0]["path"] == str(library / "p4.jpg")
    assert "no such image" in lines[2]["error"] and "results" not in lines[2]
    assert lines[3]["error"] and "results" not in lines[3]
    # One image: today's output, a JSON array.
    rc, out, _ = run_main(capsys, "query", outside, "--folder", library, "--index-dir", idx, "-k", "2", "--json")
    assert rc == 0 and json.loads(out) == lines[1]["results"]
    rc, out, _ = run_main(capsys, "query", images[0], outside, "--folder", library, "--index-dir", idx, "-k", "1")
    assert rc == 0 and out.count("1 look-alikes of") == 2 and str(library / "p4.jpg") in out.splitlines()[-1]


def test_a_name_that_is_not_utf8_is_indexed_queried_and_printed(library, tmp_path, capsys):
    try:
        with open(os.path.join(os.fsencode(library), b"caf\xe9.jpg"), "wb") as fh:
            fh.write(jpeg_bytes(EDITS["resized"](make_photo(62))))
    except OSError as exc:
        pytest.skip(f"this file system refuses the name: {exc}")
    idx = tmp_path / "idx"
    rc, out, _ = run_main(capsys, "index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    assert rc == 0 and "9 images: 8 embedded" in out and "the index holds 8" in out
    odd = library / "caf\udce9.jpg"
    rc, out, _ = run_main(capsys, "query", library / "p2.jpg", "--folder", library, "--index-dir", idx, "-k", "1",
                          "--json")
    assert rc == 0 and json.loads(out)[0]["path"] == str(odd)  # json.loads gives back the name that opens it
    assert os.path.isfile(json.loads(out)[0]["path"])
    rc, out, _ = run_main(capsys, "query", odd, "--folder", library, "--index-dir", idx, "-k", "1")
    assert rc == 0 and "caf\\udce9.jpg" in out.splitlines()[0] and str(library / "p2.jpg") in out


def _without_write_access():
    """For a child run as root: drop the capabilities that let root write anywhere, so that a
    chmod a-w folder is read-only to it as to any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP


def test_query_reads_an_index_the_user_may_not_write(library, tmp_path, capsys):
    idx = tmp_path / "idx"
    run_main(capsys, "index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    before = {p: p.stat().st_mtime_ns for p in idx.rglob("*")}
    for p in [idx, *idx.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        preexec = _without_write_access if os.geteuid() == 0 else None
        probe = subprocess.run([sys.executable, "-c", f"open({str(idx / 'probe')!r}, 'w')"], capture_output=True,
                               preexec_fn=preexec)
        if probe.returncode == 0:
            pytest.skip("chmod a-w does not stop this user from writing (root with every capability)")
        proc = simviewer("query", library / "sub" / "p3_small.jpg", "--folder", library, "--index-dir", idx,
                         "-k", "3", "--json", preexec_fn=preexec, check=False)
    finally:
        for p in [idx, *idx.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == 3 and results[0]["path"] == str(library / "p3.jpg")
    assert {p: p.stat().st_mtime_ns for p in idx.rglob("*")} == before  # nothing was written


def test_eval_with_another_model_leaves_the_folders_index_alone(library, tmp_path, capsys):
    idx = tmp_path / "idx"
    run_main(capsys, "index", library, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    manifest = (idx / "manifest.json").read_text()
    (tmp_path / "labels.csv").write_text("path,group\np3.jpg,a\nsub/p3_small.jpg,a\np1.jpg,b\np2.jpg,c\n")
    rc, out, err = run_main(capsys, "eval", library, "--labels", tmp_path / "labels.csv", "--index-dir", idx,
                            "--model", "resnet34", "--weights", "none", "--no-invariant", "--json")
    assert rc == 0 and "ResNet-34" in json.loads(out)["methods"][0]["method"]
    assert (idx / "manifest.json").read_text() == manifest  # still the ResNet-18 index
    assert "separate index" in err
    separate = [json.loads(p.read_text()) for p in (idx / "eval").glob("*/manifest.json")]
    assert [m["model"]["arch"] for m in separate] == ["resnet34"]


def test_a_full_disk_while_indexing_is_one_line(library, tmp_path, capsys, monkeypatch):
    from simviewer.core.library import Library

    real_open = Library.open_catalog

    def full_catalog(self, *args, **kw):
        cat = real_open(self, *args, **kw)
        cat.db.execute(f"PRAGMA max_page_count={cat.db.execute('PRAGMA page_count').fetchone()[0]}")
        return cat

    monkeypatch.setattr(Library, "open_catalog", full_catalog)
    rc, out, err = run_main(capsys, "index", library, "--model", "resnet18", "--weights", "none",
                            "--index-dir", tmp_path / "idx")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("simviewer: error: the disk holding the catalog") and "previous index" in err
