"""``simviewer dedup`` and ``simviewer eval``: duplicate groups, clean-ups with undo, and the
quality of the folder's model on labelled photos. Both search through core.dedup's one finder.

Reports go to stdout or to a file (``--json -`` / ``--csv -``: stdout, the convention of the other
commands); progress bars and warnings go to stderr. When stdout carries a report, the lines meant
for a person (the summary, what was moved) go to stderr too, so the report can be piped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TextIO

from .drive import Bar, drive

log = logging.getLogger("simviewer")

# Kept here (not imported from core.dedup) so that --help stays instant.
RULES_FOR_HELP = ("resolution", "size", "oldest", "newest", "shortest-path", "folder:DIR")
STDOUT = "-"
PAIR_CHOICES = ("keep-raw", "keep-jpeg")


def add_parsers(sub, add_library_args) -> None:
    """The ``dedup`` and ``eval`` sub-commands; *add_library_args(parser)* adds the model and index
    options every library command shares."""
    p = sub.add_parser("dedup", help="find groups of near-duplicate photos; optionally clean them up",
                       description="Group FOLDER's near-duplicates (every member within the threshold of its "
                                   "group's keeper), report them, and optionally move the sure duplicates to the "
                                   "system trash or to a folder. Sure duplicates are exact copies and members as "
                                   "alike as a typical edited copy of the library's photos (its calibrated sure "
                                   "level); the others are listed as (similar, check): they may be another photo "
                                   "of the same subject, and are moved only with --include-similar. A clean-up "
                                   "never moves every copy of one photo's content. Every move is journalled "
                                   "first: --undo puts the files back. Reference folders are never touched. A "
                                   "camera's RAW and the JPEG beside it (same folder and name) are one shot, never "
                                   "duplicates of each other: they are grouped as one photo, and one kind of each "
                                   "goes only with --pairs.")
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
    p.add_argument("--json", nargs="?", const=STDOUT, metavar="FILE",
                   help="write the groups as JSON to FILE, or to stdout with - or no FILE")
    p.add_argument("--csv", nargs="?", const=STDOUT, metavar="FILE",
                   help="write the groups as CSV to FILE, or to stdout with - or no FILE")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--trash", action="store_true", help="move the sure duplicates to the system trash")
    action.add_argument("--move-to", metavar="DIR", help="move the sure duplicates under DIR, keeping their relative "
                                                         "paths")
    action.add_argument("--undo", nargs="?", const="latest", metavar="JOURNAL",
                        help="put back the files of the last clean-up (or of JOURNAL)")
    p.add_argument("--hardlink", action="store_true",
                   help="replace each byte-identical duplicate by a hard link to its keeper (same file system "
                        "only); its own file goes to the system trash, or under --move-to DIR, so --undo can "
                        "restore it")
    p.add_argument("--include-similar", action="store_true",
                   help="--trash/--move-to also move the members marked (similar, check): every non-keeper "
                        "but the last copy of a content")
    p.add_argument("--pairs", choices=PAIR_CHOICES,
                   help="clean up RAW+JPEG pairs instead of duplicates: keep the RAW (or the JPEG) of each shot "
                        "and move the other file with --trash or --move-to DIR (--dry-run lists them); without "
                        "it pairs are never touched")
    p.add_argument("--dry-run", action="store_true", help="say what --trash/--move-to would do, do nothing")
    add_library_args(p)

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
    add_library_args(p)


# -- shared pieces ------------------------------------------------------------------------------
def _up_to_date_index(library, args: argparse.Namespace):
    """Bring the folder's index up to date (near-instant when nothing changed) and load it.

    The model is the one the folder was indexed with, unless --model/--weights ask for another.
    """
    from . import CliError, _choose_embedder, _run_update

    embedder, _ = _choose_embedder(args, library.manifest())
    summary = _run_update(library, embedder, args, quiet=False)
    if summary is None or summary.cancelled:
        raise CliError("indexing was stopped; nothing was grouped")
    return library.load_index(embedder.fingerprint)


def _search(library, index, args: argparse.Namespace, floor: float):
    """The finder's search under progress bars on stderr; Ctrl+C stops it (nothing is grouped)."""
    from ..core import dedup
    from . import CliError

    bar = Bar()
    found = []

    def handle(ev) -> None:
        if isinstance(ev, dedup.VariantProgress):
            if not bar.started:
                bar.start(ev.total, "mirrored/rotated copies")
            bar.update(ev.done, ev.total)
        elif isinstance(ev, dedup.NeighbourProgress):
            if ev.done == 0:
                bar.start(ev.total, "neighbours", unit="photo")
            bar.update(ev.done, ev.total)
        else:
            found.append(ev)

    try:
        stopped = drive(lambda stop: dedup.find_duplicates(
            library, index, floor=floor, invariant=args.invariant, should_stop=stop, precision=args.precision,
            threads=args.threads, batch_size=args.batch_size, workers=args.workers),
            handle, stopping="stopping; the mirrored/rotated copies made so far are kept")
    finally:
        bar.close()
    if stopped or not found:
        raise CliError("stopped; nothing was grouped (the copies embedded so far are kept for the next run)")
    for path, reason in found[-1].skipped:
        log.info("no mirrored/rotated copies of %s: %s", path, reason)
    return found[-1]


def _variant_vectors(library, index, args: argparse.Namespace, items) -> dict:
    """Vectors of mirrored/rotated copies of *items* under a progress bar (Ctrl+C stops)."""
    from ..core import dedup
    from . import CliError

    embedder = dedup.index_embedder(index, precision=args.precision, threads=args.threads)
    bar = Bar()
    bar.start(None, "mirrored/rotated copies")
    result = []

    def handle(ev) -> None:
        if isinstance(ev, dedup.VariantProgress):
            bar.update(ev.done, ev.total)
        else:
            result.append(ev)

    try:
        stopped = drive(lambda stop: dedup.variant_vectors(
            library, embedder, [(it.hash, it.path) for it in items], batch_size=args.batch_size,
            workers=args.workers, should_stop=stop), handle, stopping="stopping after this batch")
    finally:
        bar.close()
    if stopped:
        raise CliError("stopped; the copies embedded so far are kept for the next run")
    for path, reason in result[-1].skipped:
        log.info("no mirrored/rotated copies of %s: %s", path, reason)
    return result[-1].vectors


def _print_result(verb: str, result, out: TextIO | None = None) -> None:
    from ..core.units import human_size

    out = out or sys.stdout
    print(f"{verb} {len(result.moved)} files ({human_size(result.bytes_moved)})", file=out)
    for path, reason in result.skipped:
        print(f"  left alone: {path}: {reason}", file=out)


# -- dedup --------------------------------------------------------------------------------------
def cmd_dedup(args: argparse.Namespace) -> int:
    from ..core.library import Library
    from . import CliError

    if args.json == STDOUT and args.csv == STDOUT:
        raise CliError("only one report can go to stdout: give --json or --csv a FILE")
    library = Library(args.folder, args.index_dir)
    if args.undo:
        return _undo(library, args)
    for name, value in (("--threshold", args.threshold), ("--min", args.min_score), ("--max", args.max_score)):
        if value is not None and not -1.0 <= value <= 1.0:
            raise CliError(f"{name} must be a cosine between -1 and 1, not {value}")
    # A person's lines go to stderr when stdout carries a report.
    out = sys.stderr if STDOUT in (args.json, args.csv) else sys.stdout
    index = _up_to_date_index(library, args)
    calibration = library.calibration(index.model_fingerprint)
    if args.pairs and args.hardlink:
        raise CliError("--hardlink is for byte-identical copies; a RAW and its JPEG are not: leave it out with --pairs")
    if args.pairs and not (args.trash or args.move_to or args.dry_run):
        raise CliError(f"--pairs {args.pairs} needs --trash or --move-to DIR (or --dry-run to see what would move)")
    groups, threshold, reference, items = _find_groups(library, index, args, calibration)
    # Above the sure level a member is as alike as a typical edited copy; below it (but above the
    # threshold) it may be another photo of the same subject: listed to check, moved only on request.
    sure_level = calibration.sure_level if calibration is not None else None
    _write_reports(groups, threshold, sure_level, args)
    unreliable = args.threshold is None and not calibration.reliable
    _print_groups(groups, threshold, sure_level, index, args, out)
    if unreliable:
        print(f"warning: {calibration.summary()}", file=sys.stderr)
    if args.pairs:  # not a matter of similarity: the calibration does not come into it
        return _clean_up_pairs(library, items, reference, args, out)
    if not _acting(args):
        return 0
    if unreliable:
        raise CliError("nothing was moved: this model cannot tell duplicates apart reliably on this library; "
                       "index with the pretrained model (--model efficientnet_lite0), or give --threshold to "
                       "decide yourself")
    return _clean_up(library, groups, reference, sure_level, args, out)


def _undo(library, args: argparse.Namespace) -> int:
    from ..core import dedup
    from . import CliError

    journal = dedup.latest_journal(library.journal_dir) if args.undo == "latest" else Path(args.undo)
    if journal is None or not journal.is_file():
        raise CliError(f"no clean-up journal to undo in {library.journal_dir}")
    result = None
    for ev in dedup.undo(journal, root=library.folder):
        result = ev
    _print_result("put back", result)
    _up_to_date_index(library, args)  # the restored files reuse their kept vectors
    return 0 if not result.skipped else 1


def _find_groups(library, index, args: argparse.Namespace, calibration):
    """(groups, threshold, reference folders, the indexed items) of the command's options."""
    from ..core import dedup

    threshold = dedup.starting_threshold(calibration, args.threshold)
    reference = tuple(Path(r).expanduser().resolve() for r in args.reference)
    rules = tuple(args.keep or dedup.DEFAULT_RULES)
    dedup.rule_key(rules)  # reject an unknown rule before the slow part
    floor = min(threshold, args.min_score if args.min_score is not None else threshold)
    found = _search(library, index, args, floor)
    groups = found.groups(threshold, min_score=args.min_score, max_score=args.max_score, rules=rules,
                          reference=reference)
    return groups, threshold, reference, found.items


def _write_reports(groups, threshold: float, sure_level: float | None, args: argparse.Namespace) -> None:
    from ..core import dedup

    if args.json == STDOUT:
        sys.stdout.write(dedup.json_text(groups, threshold, sure_level) + "\n")
    elif args.json:
        dedup.write_json(groups, threshold, args.json, sure_level)
    if args.csv == STDOUT:
        sys.stdout.write(dedup.csv_text(groups, sure_level))
    elif args.csv:
        dedup.write_csv(groups, args.csv, sure_level)
    sys.stdout.flush()


def _print_groups(groups, threshold: float, sure_level: float | None, index, args: argparse.Namespace,
                  out: TextIO) -> None:
    """The summary line, then each group (the first 50 before a clean-up; none when stdout
    carries a report, which lists them all)."""
    from ..core import dedup
    from ..core.units import human_size

    reclaim = sum(g.reclaimable for g in groups)
    untrained = " (untrained model)" if index.model.untrained else ""
    how = "given" if args.threshold is not None else "calibrated on this library"
    sure = sum(len(g.sure(sure_level)) for g in groups)
    check = sum(len(g.to_check(sure_level)) for g in groups)
    level = f"cosine >= {sure_level:.4f} or exact copies" if sure_level is not None else \
        "exact copies only: no calibration"
    print(f"{len(groups)} groups of near-duplicates at cosine >= {threshold:.4f} ({how}){untrained}: "
          f"{sum(len(g.members) - 1 for g in groups)} duplicates, {human_size(reclaim)} to reclaim; "
          f"{sure} sure duplicates ({level}), {check} similar to check", file=out)
    if out is not sys.stdout:
        return
    for g in groups[:50] if _acting(args) else groups:
        kind = " (exact copies)" if g.exact else ""
        print(f"keep {g.keeper.path}{_partners(g.members[0])}{kind}", file=out)
        for m in g.members[1:]:
            how = f"  ({m.via})" if m.via else ""
            mark = "" if dedup.is_sure(m, sure_level) else "  (similar, check)"
            print(f"  {m.score * 100:6.2f}%  {m.item.path}{_partners(m)}{how}{mark}", file=out)


def _partners(m) -> str:
    """" + IMG_1.JPG" after a RAW+JPEG shot's lead file: the shot is kept or moved whole."""
    return "".join(f" + {p.path.name}" for p in m.partners)


def _acting(args: argparse.Namespace) -> bool:
    """Whether the command moves files (else it only reports)."""
    return bool(args.trash or args.move_to or args.hardlink)


def _clean_up(library, groups, reference, sure_level: float | None, args: argparse.Namespace, out: TextIO) -> int:
    """Move what :func:`plan_removals` plans (--dry-run: say what it would)."""
    from ..core import dedup
    from ..core.units import human_size

    plan = dedup.plan_removals(groups, reference=reference, sure_level=sure_level,
                               include_similar=args.include_similar)
    where = args.move_to or "the system trash"
    check = sum(len(g.to_check(sure_level)) for g in groups)
    if check and not args.include_similar:
        print(f"{check} similar photos to check are left where they are (--include-similar moves them too)",
              file=out)
    if args.dry_run:
        print(f"dry run: would move {len(plan)} files ({human_size(sum(p.item.size for p in plan))}) to {where}",
              file=out)
        return 0
    return _execute(library, plan, reference, args, out)


def _clean_up_pairs(library, items, reference, args: argparse.Namespace, out: TextIO) -> int:
    """Move one kind of each RAW+JPEG shot (--pairs keep-raw: the JPEGs), never in a reference
    folder, through the same journalled moves as any clean-up (--dry-run: list them)."""
    from ..core import dedup
    from ..core.dedup.pairs import plan_shot_removals
    from ..core.units import human_size

    keep = args.pairs.removeprefix("keep-")
    plan = [p for p in plan_shot_removals(items, keep) if not dedup.in_folders(p.item.path, reference)]
    where = args.move_to or "the system trash"
    kind = "RAW" if keep == "raw" else "JPEG"
    if args.dry_run or not plan:
        verb = "dry run: would move" if plan else "nothing to move:"
        print(f"{verb} {len(plan)} files of RAW+JPEG pairs ({human_size(sum(p.item.size for p in plan))}) "
              f"to {where}, keeping the {kind} of each", file=out)
        for p in plan:
            print(f"  {p.item.path}  (keeps {p.group_keeper.path.name})", file=out)
        return 0
    return _execute(library, plan, reference, args, out)


def _execute(library, plan, reference, args: argparse.Namespace, out: TextIO) -> int:
    """Carry out *plan* (journalled first), say what moved and how to undo it."""
    from ..core import dedup
    from . import CliError

    where = args.move_to or "the system trash"
    result = None
    for ev in dedup.execute(plan, "move" if args.move_to else "trash", library.journal_dir, library.folder,
                            Path(args.move_to) if args.move_to else None, hardlink=args.hardlink,
                            reference=reference):
        result = ev
    _print_result(f"moved to {where}:", result, out)
    if result.moved:
        print(f"undo with: simviewer dedup {args.folder} --undo {result.journal}", file=out)
        _up_to_date_index(library, args)  # the index and catalog follow the moves
    if result.error:
        raise CliError(result.error)
    return 0


# -- eval ---------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core import dedup, evaluate
    from ..core.library import Library
    from . import CliError, eval_library

    labels = evaluate.read_labels(args.labels)
    library = eval_library(Library(args.folder, args.index_dir), args)
    index = _up_to_date_index(library, args)
    threshold = dedup.starting_threshold(library.calibration(index.model_fingerprint), args.threshold)
    with library.open_catalog() as cat:
        items = [it for it in dedup.load_items(cat, index, library.folder) if it.key in labels]
    missing = sorted(set(labels) - {it.key for it in items})
    if len(items) < 2:
        raise CliError(f"fewer than two labelled photos are indexed in {library.folder}")
    groups = np.array([labels[it.key] for it in items])
    name = index.model.label or index.model.arch
    variants = _variant_vectors(library, index, args, items) if args.invariant else None
    if variants is not None:
        name += " · invariant"
    sim = evaluate.model_similarity(np.stack([index.vector(it.key) for it in items]), items, variants)
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
    _print_eval(library, items, groups, n_pairs, missing, threshold, reports)
    return 0


def _print_eval(library, items, groups, n_pairs: int, missing: list[str], threshold: float, reports) -> None:
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
