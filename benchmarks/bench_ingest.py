"""The ingestion pipeline, step by step: where the time goes, and which variant of it pays.

--profile: the cost of each stage per photo on one core (read, BLAKE2b, JPEG decode at each draft
scale, resize + crop, to-tensor + normalise, catalog write) and of the network at batch 16/32/64
with 1 and 2 threads (bf16 autocast, channels_last). From those it prints the best rate the
machine can reach: every photo costs (its stages + the network) of CPU time, the cores share it.

--variants: each pipeline variant indexes FOLDER from scratch in a fresh child process, rounds
interleaved (a, b, c, a, b, c, ...) so that noise from other work on the machine spreads evenly;
prints images/s end to end (best of the rounds and the spread), the ratio to the naive pipeline
measured in the same run, the peak memory (max RSS of the indexing process, and of each decoder
process), how busy the rest of the machine was during each run, and with --stall how late a Python
thread of the indexing process wakes while it runs (what a window's event loop would feel).

    python benchmarks/bench_ingest.py benchmarks/out/12mp --profile --model resnet50
    python benchmarks/bench_index.py --make-12mp benchmarks/out/12mp256 \
        --source ../shared/data/ukbench_subset56 --count 256
    python benchmarks/bench_ingest.py benchmarks/out/12mp256 --model resnet50 \
        --variants naive,before,threads,processes --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# name -> Library.update settings; "naive" is the textbook pipeline of bench_index.py, "threads"
# simviewer's defaults, "before" the decoder priority and batch size simviewer used before them.
VARIANTS: dict[str, dict] = {
    "naive": {"kind": "naive"},
    "before": {"decoders": "threads", "nice": 0, "batch": 32},
    "threads": {"decoders": "threads", "nice": 10, "batch": 16},
    # without the mirrored/rotated copies and the calibration that a library update now adds
    "threads-plain": {"decoders": "threads", "nice": 10, "batch": 16, "copies": False, "calibrate": False},
    "threads-nonice": {"decoders": "threads", "nice": 0, "batch": 16},
    "threads-nice19": {"decoders": "threads", "nice": 19, "batch": 16},
    "threads-b32": {"decoders": "threads", "nice": 10, "batch": 32},
    "threads-b64": {"decoders": "threads", "nice": 10, "batch": 64},
    "threads-1w": {"decoders": "threads", "nice": 10, "batch": 16, "workers": 1},
    "threads-3w": {"decoders": "threads", "nice": 10, "batch": 16, "workers": 3},
    "processes": {"decoders": "processes", "nice": 10, "batch": 16},
    "processes-nonice": {"decoders": "processes", "nice": 0, "batch": 16},
    "torch1-threads": {"decoders": "threads", "nice": 10, "batch": 16, "torch_threads": 1},
    "torch1-1process": {"decoders": "processes", "nice": 0, "batch": 16, "torch_threads": 1, "workers": 1},
    "threads-interop1": {"decoders": "threads", "nice": 10, "batch": 16, "interop": 1},
}


def _files(folder: Path) -> list[str]:
    from simviewer.core.images import walk_images

    return sorted(e.path for e in walk_images(folder))


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# -- profile ------------------------------------------------------------------------------------
def profile(folder: Path, arch: str, weights: str, limit: int, repeat: int,
            batch_sizes: tuple[int, ...] = (8, 16, 32, 64)) -> dict:
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    from simviewer.core.catalog import Catalog, FileRecord
    from simviewer.core.decoding import centre_crop_array
    from simviewer.core.embedder import Embedder
    from simviewer.core.images import decode_bytes, read_file

    torch.set_num_threads(1)
    files = _files(folder)[:limit]
    n = len(files)
    emb = Embedder(arch, weights, precision="bf16" if Embedder(arch, weights).use_bf16 else "fp32", threads=1)
    pre = emb.preprocess
    datas = [read_file(f) for f in files]
    ms: dict[str, float] = {}

    def per_image(name: str, fn) -> None:
        ms[name] = _best(fn, repeat) / n * 1e3
        print(f"  {name:52s} {ms[name]:7.2f} ms", flush=True)

    print(f"stages, one core, per photo ({n} photos of {folder}):")
    per_image("read the file (page cache)", lambda: [read_file(f) for f in files])
    for algo in ("blake2b", "sha256", "sha1", "md5"):
        kw = {"digest_size": 16} if algo == "blake2b" else {}
        per_image(f"hash {algo}" + (" (the catalog key)" if algo == "blake2b" else " (for reference)"),
                  lambda a=algo, k=kw: [hashlib.new(a, d, **k).digest() for d in datas])

    def decode_at(divisor: int | None):
        def run():
            for d in datas:
                im = Image.open(io.BytesIO(d))
                if divisor:
                    im.draft("RGB", (im.width // divisor, im.height // divisor))
                im.load()
        return run

    per_image("decode: Image.open + exif + draft to >= resize (ours)",
              lambda: [decode_bytes(d, pre.min_side) for d in datas])
    for div in (8, 4, 2):
        per_image(f"decode: draft 1/{div}", decode_at(div))
    per_image("decode: full size (naive)", decode_at(None))

    def whole_file():
        for d in datas:
            im = Image.open(io.BytesIO(d))
            im.draft("RGB", (pre.min_side, pre.min_side))
            im.decodermaxblock = len(d)  # hand libjpeg the whole file at once, not 64 KiB at a time
            im.load()

    per_image("decode: draft, whole file fed at once", whole_file)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:  # not a dependency: the same libjpeg-turbo, for reference
        cv2.setNumThreads(1)
        per_image("decode: OpenCV IMREAD_REDUCED_COLOR_8 (for reference)",
                  lambda: [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_REDUCED_COLOR_8) for d in datas])

    images = [decode_bytes(d, pre.min_side).image for d in datas]

    def one_step(im):
        w, h = im.size
        s = pre.resize / min(w, h)
        size = (max(pre.resize, round(w * s)), max(pre.resize, round(h * s)))
        left, top = int(round((size[0] - pre.crop) / 2.0)), int(round((size[1] - pre.crop) / 2.0))
        sx, sy = w / size[0], h / size[1]
        box = (left * sx, top * sy, (left + pre.crop) * sx, (top + pre.crop) * sy)
        return np.asarray(im.resize((pre.crop, pre.crop), Image.BILINEAR, box=box, reducing_gap=3.0))

    per_image("resize + centre crop (ours, reducing_gap 3)", lambda: [pre.crop_array(im) for im in images])
    for gap in (2.0, None):
        def resize_gap(g=gap):
            for im in images:
                w, h = im.size
                s = pre.resize / min(w, h)
                im.resize((round(w * s), round(h * s)), Image.BILINEAR, reducing_gap=g)
        per_image(f"resize only, reducing_gap {gap}", resize_gap)
    per_image("resize + crop in one step (Image.resize box=)", lambda: [one_step(im) for im in images])
    diff = max(int(np.abs(pre.crop_array(im).astype(int) - one_step(im).astype(int)).max()) for im in images)
    print(f"    one-step resize moves pixels by up to {diff} levels (would change every stored vector)")
    per_image("torchvision Resize + CenterCrop on the draft (naive)",
              lambda: [TF.center_crop(TF.resize(im, pre.resize), pre.crop) for im in images])

    crops = [centre_crop_array(im, pre.resize, pre.crop) for im in images]

    def per_image_tensor():
        ts = [TF.normalize(torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0), pre.mean, pre.std)
              for a in crops]
        torch.stack(ts).contiguous(memory_format=torch.channels_last)

    per_image("to tensor + normalise per photo, stack, channels_last (before)", per_image_tensor)
    per_image("uint8 batch -> normalised channels_last in one pass (ours)",
              lambda: pre.normalise(np.stack(crops)))

    vec = np.random.default_rng(0).standard_normal((n, emb.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp, Catalog(Path(tmp) / "catalog.sqlite") as cat:
        rounds = iter(range(10**6))

        def catalog_writes():
            r = next(rounds)  # new rows every time, as in a real run
            for i in range(0, n, 32):
                recs = [FileRecord(f"r{r}/p{j}.jpg", 1, 1, f"{r:08x}{j:024x}", 4000, 3000, "JPEG", "ok", None)
                        for j in range(i, min(n, i + 32))]
                cat.write_batch(recs, "m", [(rec.hash, vec[j]) for j, rec in zip(range(i, i + 32), recs)])
        per_image("catalog write, batches of 32 (one transaction each)", catalog_writes)

    print(f"network alone, {arch} {'bf16' if emb.use_bf16 else 'fp32'} channels_last:")
    infer: dict[tuple[int, int], float] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for bs in batch_sizes:
            x = torch.randn(bs, 3, pre.crop, pre.crop)
            emb.embed_tensors(x)
            t = _best(lambda x=x: emb.embed_tensors(x), repeat)
            infer[(threads, bs)] = t / bs * 1e3
            print(f"  {threads} thread(s), batch {bs:2d}: {bs / t:6.1f} images/s = {t / bs * 1e3 * threads:6.1f} "
                  "ms of CPU per photo", flush=True)

    torch.set_num_threads(2)
    x = torch.randn(batch_sizes[0], 3, pre.crop, pre.crop)
    folded, rates = emb.inference_model, {}
    for label, net in [("batch norms as they are (before)", emb.model), ("batch norms folded (ours)", folded)] * 2:
        emb._inference = net  # which network embed_tensors runs
        emb.embed_tensors(x)
        t = _best(lambda: emb.embed_tensors(x), repeat)
        rates[label] = max(rates.get(label, 0.0), len(x) / t)
    for label, rate in rates.items():
        ms[f"network, {label}"] = 2e3 / rate
        print(f"  2 threads, batch {len(x)}, {label}: {rate:6.1f} images/s", flush=True)
    prep = (ms["read the file (page cache)"] + ms["hash blake2b (the catalog key)"]
            + ms["decode: Image.open + exif + draft to >= resize (ours)"]
            + ms["resize + centre crop (ours, reducing_gap 3)"]
            + ms["uint8 batch -> normalised channels_last in one pass (ours)"]
            + ms["catalog write, batches of 32 (one transaction each)"])
    cores = os.cpu_count() or 1
    best_2 = min(infer[(2, b)] * 2 for b in batch_sizes)
    best_1 = min(infer[(1, b)] for b in batch_sizes)
    net = min(best_1, best_2)
    bound = cores * 1e3 / (prep + net)
    decode_only = cores * 1e3 / ms["decode: Image.open + exif + draft to >= resize (ours)"]
    print(f"per photo: {prep:.1f} ms of CPU before the network + {net:.1f} ms in it")
    print(f"bound on {cores} cores: {bound:.1f} images/s (decoding alone, with a free network: {decode_only:.1f})")
    return {"stages_ms": ms, "network_ms_per_photo": {f"{t}x{b}": v for (t, b), v in infer.items()},
            "prep_ms": prep, "network_ms": net, "bound_images_per_s": bound, "decode_only_bound": decode_only}


# -- one variant, in a child process ------------------------------------------------------------
def run_one(folder: Path, cfg: dict) -> dict:
    import torch

    if cfg.get("interop"):
        torch.set_num_interop_threads(cfg["interop"])
    from simviewer.core.embedder import Embedder
    from simviewer.core.library import Library, final_summary

    arch, weights = cfg["arch"], cfg["weights"]
    files = _files(folder)
    if cfg["kind"] == "naive":
        sys.path.insert(0, str(HERE))
        from bench_index import naive

        emb = Embedder(arch, weights, precision="fp32", threads=cfg.get("torch_threads"))
        t = time.perf_counter()
        ips_loop = naive(files, emb)  # builds the network inside, like ours does
        seconds = time.perf_counter() - t
        out = {"images_per_s": len(files) / seconds, "loop_images_per_s": ips_loop, "seconds": seconds}
    else:
        from simviewer.core.library import IndexProgress

        emb = Embedder(arch, weights, threads=cfg.get("torch_threads"))
        progress: list[tuple[float, int]] = []
        probe = StallProbe() if cfg.get("stall") else contextlib.nullcontext()
        with tempfile.TemporaryDirectory() as tmp, probe:
            t = time.perf_counter()
            events = Library(folder, Path(tmp)).update(
                emb, batch_size=cfg.get("batch", 16), workers=cfg.get("workers"),
                decoders=cfg.get("decoders", "threads"), decoder_nice=cfg.get("nice", 10),
                calibrate=cfg.get("calibrate", True), **({} if cfg.get("copies", True) else {"variants": ()}))
            worker_peaks: dict[int, float] = {}

            def watch(ev):
                for pid, mb in _decoder_peaks().items():
                    worker_peaks[pid] = max(mb, worker_peaks.get(pid, 0.0))
                if isinstance(ev, IndexProgress):
                    progress.append((ev.elapsed, ev.done))
                return ev

            s = final_summary(watch(ev) for ev in events)
            seconds = time.perf_counter() - t
        assert s.embedded == len(files) - len(s.skipped), s
        (t_first, n_first), (t_last, n_last) = progress[0], progress[-1]
        out = {"images_per_s": s.embedded / seconds, "seconds": seconds, "embedded": s.embedded,
               "first_batch_s": t_first, "network_images_per_s": s.images_per_second, "bf16": emb.use_bf16,
               "after_first_batch_images_per_s": (n_last - n_first) / (t_last - t_first) if t_last > t_first else None,
               "decoder_rss_mb": sorted(worker_peaks.values()), **(probe.result() if cfg.get("stall") else {})}
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20
    return out


class StallProbe:
    """A Python thread that asks to wake every 2 ms, as a GUI thread would for its events: how
    late it wakes tells how long the indexing keeps the interpreter (the GIL) from it."""

    def __init__(self, period: float = 0.002) -> None:
        self.period, self.late, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(self.period)
            self.late.append(time.perf_counter() - t - self.period)

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        late = np.array(self.late or [0.0]) * 1e3
        return {"stall_p99_ms": float(np.percentile(late, 99)), "stall_max_ms": float(late.max())}


def _decoder_peaks() -> dict[int, float]:
    """Peak RSS (MB) of each decoder process running now, by pid (Linux; empty elsewhere)."""
    peaks: dict[int, float] = {}
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return peaks
    for task in tasks:
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                if b"simviewer.core.decoding" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[int(pid)] = int(line.split()[1]) / 1024
            except OSError:
                continue
    return peaks


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (Linux), else zeros."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:8]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4]) / tick, sum(v) / tick


def wait_for_quiet(limit: float) -> None:
    """Wait (up to *limit* s) until the machine is at least 93 % idle over 1.5 s."""
    end = time.time() + limit
    while time.time() < end:
        b0, t0 = _cpu_busy()
        time.sleep(1.5)
        b1, t1 = _cpu_busy()
        if t1 <= t0 or (b1 - b0) / (t1 - t0) < 0.07:
            return


def spawn_one(folder: Path, cfg: dict) -> dict:
    """Run one variant in a fresh interpreter; adds how busy the rest of the machine was (0..1)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, _ = _cpu_busy()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(folder), "--run-one", json.dumps(cfg)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    b1, _ = _cpu_busy()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"variant {cfg} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    mine = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out["others_load"] = max(0.0, (b1 - b0) - mine) / ((os.cpu_count() or 1) * wall) if b1 > b0 else 0.0
    return out


def variants(folder: Path, names: list[str], arch: str, weights: str, rounds: int, quiet_wait: float,
             max_others: float = 1.0, retries: int = 0, stall: bool = False) -> dict:
    results: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names:
            cfg = {"kind": "ours", **VARIANTS[name], "arch": arch, "weights": weights, "stall": stall}
            for attempt in range(1 + retries):
                if quiet_wait:
                    wait_for_quiet(quiet_wait)
                res = spawn_one(folder, cfg)
                disturbed = res["others_load"] > max_others
                after = res.get("after_first_batch_images_per_s")
                extra = f" ({after:.1f} after the first batch at {res['first_batch_s']:.1f} s)" if after else ""
                print(f"  round {r + 1} {name:20s} {res['images_per_s']:6.2f} images/s{extra}  "
                      f"(rest of the machine busy {res['others_load']:.0%}"
                      f"{', run again' if disturbed and attempt < retries else ''})", flush=True)
                if not disturbed:
                    break
            results[name].append(res)
    naive_best = max(x["images_per_s"] for x in results["naive"]) if "naive" in results else None
    print(f"\n{folder}: {len(_files(folder))} photos, {arch} ({weights}), best of {rounds} rounds")
    print(f"  {'variant':20s} {'images/s':>9s} {'spread':>13s} {'vs naive':>9s}   "
          + (f"{'stall p99 / worst':>19s}   " if stall else "") + "peak RSS (indexing + decoders)")
    summary = {}
    for name in names:
        runs = results[name]
        ips = [x["images_per_s"] for x in runs]
        best = max(ips)
        ratio = best / naive_best if naive_best else None
        rss = max(x["rss_mb"] for x in runs)
        workers = max((x.get("decoder_rss_mb") or [] for x in runs), key=sum)
        summary[name] = {"best": best, "min": min(ips), "median": statistics.median(ips), "ratio": ratio,
                         "rss_mb": rss, "decoder_rss_mb": workers, "runs": runs}
        peak = f"{rss:.0f} MB" + (f" + {len(workers)} x {max(workers):.0f} MB" if workers else "")
        stall_text = (f"{min(x['stall_p99_ms'] for x in runs):5.1f} / {min(x['stall_max_ms'] for x in runs):5.1f} ms"
                      if "stall_p99_ms" in runs[0] else "")
        summary[name]["stall_ms"] = stall_text
        print(f"  {name:20s} {best:9.2f} {min(ips):6.2f}-{max(ips):<6.2f} "
              f"{(f'{ratio:.2f}x' if ratio else '-'):>9s}   " + (f"{stall_text:>19s}   " if stall else "") + peak)
    if naive_best and "threads" in results:
        print(f"  ratio: {summary['threads']['best'] / naive_best:.2f}x (threads, the default, vs naive)")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-limit", type=int, default=32, help="photos timed per stage")
    ap.add_argument("--repeat", type=int, default=2, help="timings per stage (best kept)")
    ap.add_argument("--batch-sizes", default="8,16,32,64", help="network batch sizes to time")
    ap.add_argument("--variants", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each run, wait up to this many seconds for the machine to be idle")
    ap.add_argument("--max-others", type=float, default=0.10,
                    help="a run during which the rest of the machine used more than this share of the CPU "
                         "is run again (see --retries)")
    ap.add_argument("--retries", type=int, default=0)
    ap.add_argument("--stall", action="store_true",
                    help="also measure how late a Python thread wakes every 2 ms during indexing (it costs a "
                         "little throughput itself)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.run_one:
        print(json.dumps(run_one(args.folder, json.loads(args.run_one))))
        return 0
    print(f"machine: {platform.machine()} {platform.processor()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    out: dict = {}
    if args.profile:
        out["profile"] = profile(args.folder, args.model, args.weights, args.profile_limit, args.repeat,
                                 tuple(int(b) for b in args.batch_sizes.split(",")))
    if args.variants:
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            ap.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
        out["variants"] = variants(args.folder, names, args.model, args.weights, args.rounds, args.quiet_wait,
                                   args.max_others, args.retries, args.stall)
    if not out:
        ap.error("nothing to do: pass --profile and/or --variants")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
