"""Fault audit through the real command line: bad inputs tried and handled, kills survived, bytes lost.

Everything happens in a scratch folder under a temporary directory, with the untrained ResNet-18
(`--model resnet18 --weights none`) so that no download is needed and runs stay short.

1. Bad inputs: a library of good photos plus many kinds of nasty files (empty, truncated, mislabelled,
   absurd headers, a 2 GB sparse file, a FIFO, links, a non-UTF-8 name, ...) is indexed once. Every
   good photo must be indexed; each nasty file counts as handled when it ends where it should (in the
   index, or listed as skipped with a reason). Then one good photo is queried.
2. Kills during `index`: a fresh library is indexed and SIGKILLed after a random delay; a second
   `index` and a `query` must then succeed.
3. Kills during a clean-up: `dedup --move-to` on a folder of byte-identical pairs is SIGKILLed after a
   random delay, then `dedup --undo` runs; bytes lost = size of the files whose content is not back
   at its original path.

    python benchmarks/audit_faults.py [--kills N] [--seed S] [--keep]

Exits 1 when a good photo was not indexed, a byte was lost, or a traceback appeared.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

MODEL = ["--model", "resnet18", "--weights", "none"]
TRACEBACK = "Traceback (most recent call last)"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Run:
    rc: int | None
    out: str
    err: str
    seconds: float
    killed: bool = False
    fired_at: float | None = None

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.out or TRACEBACK in self.err


@dataclass
class Figures:
    tracebacks: list[str] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Cli:
    """Runs `python -m simviewer` in its own process group, with a private data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.env = dict(os.environ, SIMVIEWER_OFFLINE="1", SIMVIEWER_DATA_DIR=str(data_dir))
        self.env.pop("DISPLAY", None)

    def run(self, *args: str, timeout: float = 300.0, kill_after: float | None = None) -> Run:
        """Runs to the end (or `timeout`), or SIGKILLs the whole process group after `kill_after` s."""
        return self.watch(*args, timeout=timeout, fired=lambda: True, extra=kill_after)

    def watch(self, *args: str, fired, extra: float | None, timeout: float = 300.0) -> Run:
        """Polls `fired()` while the command runs; once it is true, SIGKILLs it `extra` s later (if given).

        The output goes to files, not pipes, so a command that writes much never blocks the polling.
        """
        with tempfile.TemporaryFile("w+", errors="surrogateescape") as out, \
                tempfile.TemporaryFile("w+", errors="surrogateescape") as err:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "simviewer", *args], env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
            )
            fired_at = kill_at = None
            while proc.poll() is None and time.monotonic() - t0 < timeout:
                now = time.monotonic()
                if fired_at is None and fired():
                    fired_at = now - t0
                    kill_at = None if extra is None else now + extra
                if kill_at is not None and now >= kill_at:
                    break
                time.sleep(0.002)
            killed = proc.poll() is None
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out.seek(0)
            err.seek(0)
            text = err.read()
            if killed and kill_at is None:
                text += f"\n[audit: timed out after {timeout:.0f} s]"
            return Run(proc.returncode, out.read(), text, time.monotonic() - t0, killed, fired_at)


# ---------------------------------------------------------------- files


def photo(seed: int, size: int = 96) -> Image.Image:
    """A distinct smooth picture: a random low-resolution pattern scaled up, plus noise."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    arr = np.asarray(base, dtype=np.int16) + rng.integers(-12, 12, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(ihdr: bytes, raw: bytes) -> bytes:
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def png_with_header(width: int, height: int, rows: int = 1) -> bytes:
    """A PNG whose IHDR announces width x height but whose data holds only a few empty rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"\x00" * (rows * (1 + min(width, 64)))
    return png_bytes(ihdr, raw)


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """`data` (a baseline JPEG) with its SOF0 header rewritten to announce width x height."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def png_strip(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return png_bytes(ihdr, (b"\x00" + b"\x80" * width) * height)


@dataclass
class Case:
    name: str
    rel: str  # the path whose outcome decides the case
    expect: frozenset  # outcomes that count as handled: "indexed", "skipped", "absent", "folder"


def bad_files(lib: Path, outside: Path, seed: int) -> list[Case]:
    """Writes the nasty files into `lib`; returns one Case per kind."""
    img = photo(seed + 1000, 120)
    jpg = encoded(img, "JPEG", quality=90)
    png = encoded(img, "PNG")
    rnd = np.random.default_rng(seed).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    bad, ok, either = frozenset({"skipped"}), frozenset({"indexed"}), frozenset({"indexed", "skipped"})
    cases: list[Case] = []

    def put(name: str, data: bytes, expect: frozenset, rel: str | None = None) -> Path:
        p = lib / "nasty" / (rel or name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        cases.append(Case(name, str(p.relative_to(lib)), expect))
        return p

    put("empty.jpg", b"", bad)
    put("truncated_half.jpg", jpg[: len(jpg) // 2], either)
    put("truncated_header.jpg", jpg[:40], bad)
    put("truncated.png", png[: len(png) // 3], either)
    put("random_bytes.jpg", rnd, bad)
    put("text.png", b"hello, this is not a picture\n" * 20, bad)
    put("html.jpg", b"<!DOCTYPE html><html><body>nope</body></html>", bad)
    put("zip.png", b"PK\x03\x04" + rnd[:2000], bad)
    put("absurd_header.png", png_with_header(100_000, 100_000), bad)
    put("absurd_header.jpg", jpeg_with_size(encoded(img, "JPEG", quality=80), 65_000, 65_000), bad)
    put("zero_pixel.png", png_with_header(0, 0), bad)
    put("strip_1x20000.png", png_strip(1, 20_000), bad)
    put("bad_crc.png", png[:30] + bytes([png[30] ^ 0xFF]) + png[31:], either)
    put("corrupt_middle.jpg", jpg[:600] + rnd[:400] + jpg[1000:], either)
    put("garbage_appended.jpg", jpg + rnd[:5000], ok)
    put("anim.gif", b"", ok)
    frames = [photo(seed + 2000 + k, 64).convert("P") for k in range(3)]
    (lib / "nasty/anim.gif").write_bytes(encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    put("still.gif", encoded(img.convert("P"), "GIF"), ok)
    put("lossy.webp", encoded(img, "WEBP", quality=70), ok)
    put("lossless.webp", encoded(img, "WEBP", lossless=True), ok)
    put("rgb.tiff", encoded(img, "TIFF"), ok)
    put("multipage.tif", encoded(img, "TIFF", save_all=True, append_images=[img.rotate(90)]), ok)
    put("gray16.tiff", encoded(Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257), "TIFF"), ok)
    put("bitmap.bmp", encoded(img, "BMP"), ok)
    put("cmyk.jpg", encoded(img.convert("CMYK"), "JPEG"), ok)
    put("gray.jpg", encoded(img.convert("L"), "JPEG"), ok)
    put("progressive.jpg", encoded(img, "JPEG", progressive=True), ok)
    put("gray16.png", encoded(Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257), "PNG"), ok)
    pal = img.convert("P")
    put("palette_transparent.png", encoded(pal, "PNG", transparency=0), ok)
    put("rgba.png", encoded(img.convert("RGBA"), "PNG"), ok)
    put("onebit.png", encoded(img.convert("1"), "PNG"), ok)
    put("one_pixel.png", encoded(img.resize((1, 1)), "PNG"), either)
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif_orientation6.jpg", encoded(img.resize((120, 80)), "JPEG", exif=exif), ok)
    put("jpeg_named.heic", jpg, either)
    put("png_named.jpg", png, ok)
    put("upper_case.JPG", jpg[:-2] + b"\x00\xff\xd9", ok)
    put("long_extension.jpeg", encoded(img.rotate(45), "JPEG"), ok)
    put("name with spaces é ✓.png", encoded(img.rotate(30), "PNG"), ok)
    put("new\nline.png", encoded(img.rotate(60), "PNG"), ok)
    put("x" * 200 + ".png", encoded(img.rotate(15), "PNG"), ok)
    put("folder.jpg", encoded(img.rotate(75), "PNG"), ok, rel="folder.jpg/inside.png")
    put(".hidden.jpg", jpg, frozenset({"absent"}))
    special_files(lib, outside, img, cases)
    return cases


def special_files(lib: Path, outside: Path, img: Image.Image, cases: list[Case]) -> None:
    """Sparse, FIFO, links, permissions and a non-UTF-8 name."""
    nasty = lib / "nasty"
    bad, ok = frozenset({"skipped"}), frozenset({"indexed"})
    with open(nasty / "sparse_2GB.jpg", "wb") as f:
        os.truncate(f.fileno(), 2 * 1024**3)
    cases.append(Case("sparse_2GB.jpg", "nasty/sparse_2GB.jpg", bad))
    os.mkfifo(nasty / "fifo.jpg")
    cases.append(Case("fifo.jpg", "nasty/fifo.jpg", bad))
    os.symlink(outside / "does_not_exist.jpg", nasty / "dangling.jpg")
    cases.append(Case("dangling_link.jpg", "nasty/dangling.jpg", bad))
    os.symlink(lib / "good" / "good_000.jpg", nasty / "link_to_library_photo.jpg")
    cases.append(Case("link_to_library_photo.jpg", "nasty/link_to_library_photo.jpg", frozenset({"skipped", "absent"})))
    img.rotate(120).save(outside / "outside.png")
    os.symlink(outside / "outside.png", nasty / "link_to_outside_photo.png")
    cases.append(Case("link_to_outside_photo.png", "nasty/link_to_outside_photo.png", ok))
    loop = nasty / "loop"
    loop.mkdir()
    img.rotate(150).save(loop / "in_loop.png")
    os.symlink("..", loop / "back_up")
    cases.append(Case("symlink_loop_folder", "nasty/loop/in_loop.png", frozenset({"indexed_once"})))
    name = os.fsdecode(b"caf\xe9_latin1.png")
    img.rotate(165).save(nasty / name)
    cases.append(Case("non_utf8_name.png", f"nasty/{name}", ok))
    img.rotate(180).save(nasty / "chmod000.png")
    os.chmod(nasty / "chmod000.png", 0)
    cases.append(Case("chmod000.png" + (" (root)" if IS_ROOT else ""), "nasty/chmod000.png", ok if IS_ROOT else bad))
    locked = nasty / "no_exec_folder"
    locked.mkdir()
    img.rotate(195).save(locked / "inside.png")
    os.chmod(locked, 0o600)
    expect = ok if IS_ROOT else frozenset({"folder"})
    cases.append(Case("no_exec_folder" + (" (root)" if IS_ROOT else ""), "nasty/no_exec_folder/inside.png", expect))


def write_good(folder: Path, n: int, seed: int, size: int = 96) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"good_{i:03d}.jpg"
        photo(seed * 100_003 + i, size).save(p, quality=90)
        out.append(p)
    return out


def tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            out[str(p.relative_to(root))] = (hashlib.sha256(data).hexdigest(), len(data))
    return out


def unlock(root: Path) -> None:
    """Gives back the permissions the audit took away, so that the scratch folder can be removed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p) and (os.path.isdir(p) or os.path.isfile(p)):
                os.chmod(p, 0o700 if os.path.isdir(p) else 0o600)


# ---------------------------------------------------------------- 1. bad inputs


def indexed_paths(cli: Cli, lib: Path, probe: Path, fig: Figures, label: str) -> tuple[Run, list[str] | None]:
    """Every path the index holds, listed by a query for `probe` with a k larger than the library."""
    q = cli.run("query", "--folder", str(lib), str(probe), "-k", "100000", "--json", *MODEL)
    note_traceback(fig, label, q)
    try:
        found = [r["path"] for r in json.loads(q.out)] if q.rc == 0 else None
    except (ValueError, KeyError, TypeError):
        found = None
    if found is not None:
        found = [os.path.relpath(p, lib) for p in found] + [str(probe.relative_to(lib))]
    return q, found


def note_traceback(fig: Figures, label: str, run: Run) -> None:
    if run.traceback:
        text = run.err if TRACEBACK in run.err else run.out
        last = text.strip().splitlines()[-1] if text.strip() else ""
        fig.tracebacks.append(f"{label}: {last[:150]}")


def outcome(case: Case, found: list[str], skipped: dict[str, str], folders: dict[str, str]) -> str:
    if "indexed_once" in case.expect:
        base = case.rel.rsplit("/", 1)[-1]
        n = sum(p.rsplit("/", 1)[-1] == base for p in found)
        return "indexed_once" if n == 1 else f"indexed {n} times"
    if case.rel in found:
        return "indexed"
    if skipped.get(case.rel):
        return "skipped"
    if os.path.dirname(case.rel) in folders:
        return "folder"
    return "absent"


def audit_bad_inputs(root: Path, seed: int, fig: Figures) -> None:
    lib, outside = root / "lib1", root / "outside1"
    outside.mkdir(parents=True)
    good = write_good(lib / "good", 20, seed)
    cases = bad_files(lib, outside, seed)
    cli = Cli(root / "data1")
    run = cli.run("index", str(lib), "--json", *MODEL, timeout=600)
    note_traceback(fig, "index (bad inputs)", run)
    try:
        summary = json.loads(run.out)
    except ValueError:
        summary = {}
    skipped = {s["path"]: s.get("reason", "") for s in summary.get("skipped", [])}
    folders = {s["path"]: s.get("reason", "") for s in summary.get("unreadable_folders", [])}
    q, found = indexed_paths(cli, lib, good[0], fig, "query (bad inputs)")
    found = found or []
    good_in = sum(str(p.relative_to(lib)) in found for p in good)
    handled, odd = 0, []
    for case in cases:
        got = outcome(case, found, skipped, folders)
        if got in case.expect:
            handled += 1
        else:
            odd.append(f"{case.name}: {got} (expected {'/'.join(sorted(case.expect))})")
    clean_end = run.rc == 0 or (run.rc is not None and run.rc > 0 and run.err.strip() and not run.traceback)
    fig.rows += [
        ("good photos indexed", f"{good_in}/{len(good)}"),
        ("bad inputs handled / tried", f"{handled}/{len(cases)}"),
        ("index run ended", f"rc {run.rc} in {run.seconds:.1f} s" + ("" if clean_end else " (NOT CLEAN)")),
        ("query of a good photo", f"rc {q.rc}, {max(len(found) - 1, 0)} results"),
    ]
    fig.notes += [f"unhandled: {o}" for o in odd]
    if good_in < len(good):
        fig.failures.append(f"{len(good) - good_in} good photos not indexed")
    if not clean_end or q.rc != 0:
        fig.failures.append(f"index rc {run.rc} / query rc {q.rc}: {(run.err or q.err).strip()[-200:]}")


# ---------------------------------------------------------------- 2. kills during index


def index_trial(root: Path, template: Path, k: int, delay: float, fig: Figures) -> tuple[bool, bool, str]:
    """One kill: (the kill landed, the library recovered, what went wrong)."""
    lib, data = root / f"kill_index_{k}", root / f"kill_index_data_{k}"
    shutil.copytree(template, lib)
    cli = Cli(data)
    first = cli.run("index", str(lib), *MODEL, kill_after=delay)
    note_traceback(fig, f"index kill {k}", first)
    again = cli.run("index", str(lib), "--json", *MODEL)
    note_traceback(fig, f"index after kill {k}", again)
    q = cli.run("query", "--folder", str(lib), str(lib / "good_000.jpg"), "-k", "5", "--json", *MODEL)
    note_traceback(fig, f"query after kill {k}", q)
    n = len(list(template.iterdir()))
    try:
        indexed = json.loads(again.out)["indexed"]
        results = len(json.loads(q.out))
    except (ValueError, KeyError, TypeError):
        indexed, results = -1, -1
    ok = again.rc == 0 and indexed == n and q.rc == 0 and results == 5
    why = "" if ok else f"kill {k} at {delay:.1f} s: index rc {again.rc} holds {indexed}/{n}, query rc {q.rc} " + (
        again.err or q.err
    ).strip()[-160:]
    shutil.rmtree(lib)
    shutil.rmtree(data)
    return first.killed, ok, why


def audit_index_kills(root: Path, kills: int, seed: int, rng: random.Random, fig: Figures) -> None:
    template = root / "kill_index_template"
    write_good(template, 60, seed + 7, size=160)
    cli = Cli(root / "kill_index_calibration_data")
    full = cli.run("index", str(template), *MODEL)
    note_traceback(fig, "index (unkilled)", full)
    shutil.rmtree(root / "kill_index_calibration_data")
    landed = survived = 0
    for k in range(kills):
        hit, ok, why = index_trial(root, template, k, rng.uniform(0.5, max(full.seconds, 1.0)), fig)
        landed += hit
        survived += hit and ok
        if not ok:
            fig.failures.append(why)
    fig.rows += [
        ("index: one full run", f"{full.seconds:.1f} s for 60 photos (rc {full.rc})"),
        ("index kills survived", f"{survived}/{landed} (re-index and query worked)"
         + (f"; {kills - landed} runs ended before the kill" if landed < kills else "")),
    ]


# ---------------------------------------------------------------- 3. kills during a clean-up


def dedup_library(lib: Path, seed: int, pairs: int, singles: int) -> None:
    write_good(lib, pairs + singles, seed + 13, size=256)
    (lib / "copies").mkdir()
    for i in range(pairs):
        shutil.copy2(lib / f"good_{i:03d}.jpg", lib / "copies" / f"copy_{i:03d}.jpg")


def restore(template: Path, work: Path) -> None:
    if work.exists():
        unlock(work)
        shutil.rmtree(work)
    shutil.copytree(template, work, symlinks=True)


def cleanup_trial(work: Path, template: Path, kill: tuple[str, float] | None, fig: Figures, label: str) -> dict:
    """One clean-up, SIGKILLed `kill[1]` s after it starts ("start"), or once `kill[1]` files were moved ("move")."""
    restore(template, work)
    lib, dest = work / "lib", work / "dest"
    cli = Cli(work / "data")
    before = tree_hashes(lib)

    def has_moved(n: float) -> bool:
        return dest.exists() and sum(1 for _ in dest.rglob("*.jpg")) >= n

    argv = ["dedup", str(lib), "--move-to", str(dest), "--threshold", "0.99999", *MODEL]
    if kill is not None and kill[0] == "start":
        move = cli.run(*argv, kill_after=kill[1])
    else:
        move = cli.watch(*argv, fired=lambda: has_moved(kill[1] if kill else 1), extra=None if kill is None else 0.0)
    note_traceback(fig, f"dedup {label}", move)
    moved = sum(1 for p in dest.rglob("*") if p.is_file()) if dest.exists() else 0
    undo = cli.run("dedup", str(lib), "--undo")
    note_traceback(fig, f"undo {label}", undo)
    after = tree_hashes(lib)
    lost = [(rel, size) for rel, (digest, size) in before.items() if after.get(rel, ("", 0))[0] != digest]
    return {"move": move, "undo": undo, "moved": moved, "lost": lost, "extra": len(set(after) - set(before))}


def audit_cleanup_kills(root: Path, kills: int, seed: int, rng: random.Random, fig: Figures) -> None:
    work, template = root / "cleanup", root / "cleanup_template"
    dedup_library(work / "lib", seed, pairs=60, singles=20)
    index = Cli(work / "data").run("index", str(work / "lib"), *MODEL)
    note_traceback(fig, "index (clean-up library)", index)
    shutil.copytree(work, template, symlinks=True)
    full = cleanup_trial(work, template, None, fig, "(unkilled)")
    if full["move"].rc != 0 or full["moved"] != 60 or full["lost"]:
        fig.failures.append(f"unkilled clean-up: rc {full['move'].rc}, moved {full['moved']}/60, "
                            f"lost {len(full['lost'])}: {full['move'].err.strip()[-200:]}")
    landed = mid = clean = undo_fail_nothing_lost = lost_bytes = 0
    undo_errors: dict[str, list[str]] = {}
    for k in range(kills):
        kill = ("start", rng.uniform(0.3, full["move"].seconds)) if k % 2 else ("move", rng.randint(1, 59))
        r = cleanup_trial(work, template, kill, fig, f"kill {k}")
        landed += r["move"].killed
        mid += r["move"].killed and 0 < r["moved"] < 60
        lost_bytes += sum(size for _, size in r["lost"])
        clean += not r["lost"] and not r["extra"]
        if r["extra"]:
            fig.notes.append(f"clean-up kill {k}: {r['extra']} new files in the library after undo")
        if r["lost"]:
            fig.failures.append(f"clean-up kill {k}: {len(r['lost'])} files not back: {r['lost'][:3]}; "
                                f"undo rc {r['undo'].rc}: {r['undo'].err.strip()[-160:]}")
        elif r["undo"].rc != 0:
            undo_fail_nothing_lost += 1
            said = r["undo"].err.strip().splitlines()[-1] if r["undo"].err.strip() else "(nothing on stderr)"
            undo_errors.setdefault(f"rc {r['undo'].rc}: {said.split(' in /')[0][:90]}", []).append(
                f"{k} ({r['moved']} moved)")
    fig.notes += [f"undo {msg}; after kills {', '.join(ks)}" for msg, ks in undo_errors.items()]
    fig.rows += [
        ("clean-up: one full run", f"{full['move'].seconds:.1f} s (first move at {full['move'].fired_at or 0:.1f} s), "
                                   f"{full['moved']} moved, undo rc {full['undo'].rc}"),
        ("clean-up kills survived", f"{clean}/{kills} ({landed} landed, {mid} with some but not all moved)"),
        ("bytes lost", f"{lost_bytes}"),
        ("undo rc != 0, nothing lost", f"{undo_fail_nothing_lost}/{kills}"),
    ]
    if lost_bytes:
        fig.failures.append(f"{lost_bytes} bytes lost in clean-up kills")


# ---------------------------------------------------------------- main


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        avx512 = " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        avx512 = False
    return (f"{platform.platform()}, {os.cpu_count()} CPUs{', ' + model if model else ''}"
            f"{', AVX-512' if avx512 else ''}, Python {platform.python_version()}, uid {os.geteuid()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=8, help="kills of index, and of the clean-up (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the photos and the kill delays (default 0)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder and print its path")
    args = ap.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    print("machine:", machine())
    rng = random.Random(args.seed)
    fig = Figures()
    root = Path(tempfile.mkdtemp(prefix="simviewer-audit-"))
    t0 = time.monotonic()
    try:
        audit_bad_inputs(root, args.seed, fig)
        audit_index_kills(root, args.kills, args.seed, rng, fig)
        audit_cleanup_kills(root, args.kills, args.seed, rng, fig)
    finally:
        if args.keep:
            print("scratch folder kept:", root)
        else:
            unlock(root)
            shutil.rmtree(root, ignore_errors=True)
    fig.rows.append(("tracebacks", str(len(fig.tracebacks))))
    width = max(len(k) for k, _ in fig.rows)
    for k, v in fig.rows:
        print(f"  {k:<{width}}  {v}")
    for line in fig.notes + [f"traceback: {t}" for t in fig.tracebacks] + [f"FAIL: {f}" for f in fig.failures]:
        print(" ", line)
    print(f"total {time.monotonic() - t0:.0f} s")
    return 1 if fig.failures or fig.tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
