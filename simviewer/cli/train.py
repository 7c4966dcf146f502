"""``simviewer train``: fine-tune the embedder on a folder of photos, one line per event on stderr,
a summary (or JSON) on stdout."""

from __future__ import annotations

import argparse
import json
import sys

from .drive import drive

# Kept here (not imported from core.training) so that --help stays instant.
TRAIN_METRICS = ("recall@1", "recall@5", "mAP")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _metrics_text(metrics: dict) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in TRAIN_METRICS if k in metrics)


class _Lines:
    """Progress on stderr: a step's line is rewritten in place on a terminal."""

    def __init__(self) -> None:
        self.err = sys.stderr
        self.tty = self.err.isatty()

    def __call__(self, text: str, transient: bool = False) -> None:
        if self.tty:
            self.err.write("\r\x1b[K" + text + ("" if transient else "\n"))
        else:
            self.err.write(text + "\n")
        self.err.flush()


def _show(ev, line: _Lines, tr) -> None:
    """One training event as a progress line."""
    if isinstance(ev, tr.Preparing):
        if line.tty or ev.done in (0, ev.total):
            line(f"decoding {ev.done}/{ev.total} images", transient=ev.done < ev.total)
    elif isinstance(ev, tr.Info):
        line(f"note: {ev.message}")
    elif isinstance(ev, tr.DatasetReady):
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


def _config(args: argparse.Namespace, tr):
    return tr.TrainConfig(
        dataset=args.dataset, mode=args.mode, arch=args.model, weights=args.weights, image_size=args.image_size,
        batch_size=args.batch_size, lr=args.lr, epochs=args.epochs, freeze=args.freeze, threads=args.threads,
        val_fraction=args.val_fraction, patience=args.patience, lr_patience=args.lr_patience,
        min_steps=args.min_steps, seed=args.seed,
        out=args.out, device=args.device, precision=args.precision, metric=args.metric)


def _json_summary(args: argparse.Namespace, ready, done) -> dict:
    summary = {"dataset": ready.folder if ready else str(args.dataset), **done.to_dict()}
    if ready is not None:
        summary.update({"mode": ready.mode, "arch": ready.arch, "base_weights": ready.base_weights,
                        "image_size": ready.image_size, "batch_size": ready.batch_size,
                        "train_images": ready.n_train, "val_images": ready.n_val,
                        "classes": list(ready.classes), "device": ready.device, "precision": ready.precision,
                        "threads": ready.threads, "resumed_epoch": ready.resumed_epoch,
                        "model_reason": ready.start_reason,
                        "skipped": [{"path": p, "reason": r} for p, r in ready.skipped]})
    return summary


def _print_summary(ready, done) -> None:
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


def cmd_train(args: argparse.Namespace) -> int:
    from ..core import training as tr  # here, not at the top: --help stays instant
    from . import CliError  # the package imports this module

    config = _config(args, tr)
    line = _Lines()
    seen: dict[str, object] = {}

    def handle(ev) -> None:
        _show(ev, line, tr)
        if isinstance(ev, tr.DatasetReady):
            seen["ready"] = ev
        elif isinstance(ev, tr.TrainingDone):
            seen["done"] = ev

    drive(lambda should_stop: tr.train(config, should_stop=should_stop), handle,
          stopping="stopping after this step; the best checkpoint is kept")
    ready, done = seen.get("ready"), seen.get("done")
    if done is None:
        raise CliError("training ended without a result")
    if args.json:
        print(json.dumps(_json_summary(args, ready, done), indent=2))
    else:
        _print_summary(ready, done)
    return 0
