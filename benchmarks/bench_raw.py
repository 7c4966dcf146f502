"""What the embedded-preview path saves on camera RAW files, against demosaicing them.

For each RAW file (given with --raw, or a synthetic DNG of --megapixels made on the spot with an
embedded JPEG preview of --preview pixels, as cameras store them) it times, in one run:

- read the file: what indexing pays anyway (the content hash reads every byte);
- preview: simviewer's decode for the network (``decode(min_side=256)``), which uses the embedded
  JPEG at draft scale;
- half-size demosaic: simviewer's decode when the preview is too small (``decode(4096)`` on a
  preview smaller than that);
- full demosaic: LibRaw's default processing at full size (``postprocess()``), what a RAW reader
  without the preview path would do;

each decode from the file's bytes in memory, and prints the CPU milliseconds per photo (median of
--repeat) and the ratio full demosaic / preview, for the decode alone and with the file read. One OpenMP thread by
default, like each of simviewer's decoder processes (set OMP_NUM_THREADS to change it). A synthetic
DNG is stored uncompressed; a camera's compressed RAW also pays for decompression in both demosaic
columns, so its ratio is larger.

    python benchmarks/bench_raw.py [--raw FILE ...] [--megapixels 24] [--preview 1616x1080] [--repeat 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before LibRaw's OpenMP starts

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the shared RAW writer of the tests

import rawpy  # noqa: E402

from simviewer.core.images import open_photo  # noqa: E402
from tests.rawfiles import dng_bytes, jpeg_preview  # noqa: E402


def synthetic_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with fine noise: demosaicing works on it like on a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = np.stack([0.5 + 0.4 * np.sin(x / 97.0 + y / 211.0), 0.5 + 0.4 * np.cos(y / 131.0),
                      0.5 + 0.4 * np.sin((x + y) / 173.0)], axis=-1)
    scene += rng.normal(0, 0.02, scene.shape).astype(np.float32)
    return np.clip(scene, 0, 1)


def make_dng(folder: Path, megapixels: float, preview: tuple[int, int]) -> Path:
    w = int(round((megapixels * 1e6 * 1.5) ** 0.5)) // 2 * 2
    h = int(round(w / 1.5)) // 2 * 2
    scene = synthetic_scene(h, w)
    pw, ph = preview if preview != (0, 0) else (w, h)
    small = Image.fromarray((scene * 255).astype(np.uint8)).resize((pw, ph), Image.BILINEAR)
    path = folder / f"synthetic_{w}x{h}.dng"
    path.write_bytes(dng_bytes(scene, jpeg_preview(small, quality=92)))
    return path


def timed(fn, repeat: int) -> float:
    """Median CPU milliseconds of one call (user + system time of this process: the decode runs on
    one thread, and CPU time does not count the waits of a machine shared with other work)."""
    fn()  # warm-up: page cache, LibRaw's tables
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1e3


def full_demosaic(src) -> None:
    with (rawpy.imread(io.BytesIO(src.data)) if src.data is not None else rawpy.imread(src.path)) as raw:
        raw.postprocess()


def measure(path: Path, repeat: int) -> dict[str, float]:
    with rawpy.imread(str(path)) as raw:
        thumb = raw.extract_thumb()
        preview = Image.open(io.BytesIO(thumb.data)).size if thumb.format == rawpy.ThumbFormat.JPEG \
            else thumb.data.shape[1::-1]
        sensor = (raw.sizes.width, raw.sizes.height)
    size_mb = path.stat().st_size / 1e6
    print(f"{path.name}: {size_mb:.0f} MB, sensor {sensor[0]}x{sensor[1]}, embedded preview {preview[0]}x{preview[1]}")
    out = {"read the file": timed(lambda: open_photo(path), repeat)}
    src = open_photo(path)  # the decodes below start from the bytes in memory, as the decoders do
    out["preview"] = timed(lambda: src.decode(256), repeat)
    if min(preview) < 4096:
        out["half-size demosaic"] = timed(lambda: src.decode(4096), repeat)
    out["full demosaic"] = timed(lambda: full_demosaic(src), repeat)
    for name, ms in out.items():
        print(f"  {name:<20} {ms:9.1f} ms/photo (CPU)")
    read = out["read the file"]
    print(f"  ratio: {out['full demosaic'] / out['preview']:.0f}x (full demosaic / preview, decoding only); "
          f"{(read + out['full demosaic']) / (read + out['preview']):.1f}x with the file read")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, nargs="*", default=[], help="camera RAW files to time")
    ap.add_argument("--megapixels", type=float, default=24.0, help="size of the synthetic DNG")
    ap.add_argument("--preview", default="1616x1080", help="its embedded preview, WxH, or 'full'")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    preview = (0, 0) if args.preview == "full" else tuple(int(v) for v in args.preview.lower().split("x"))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, LibRaw {'.'.join(map(str, rawpy.libraw_version))}")
    with tempfile.TemporaryDirectory() as tmp:
        files = args.raw or [make_dng(Path(tmp), args.megapixels, preview)]
        for path in files:
            measure(path, args.repeat)


if __name__ == "__main__":
    main()
