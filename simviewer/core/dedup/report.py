"""Reports of duplicate groups: the JSON contract, a CSV sheet, written atomically or to a stream."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .types import Group, Member, is_sure


def report_dict(groups: Sequence[Group], threshold: float, sure_level: float | None = None) -> dict:
    """The contract's JSON: items list the whole group, keeper included; paths absolute. Each item
    says whether it is a sure duplicate of the keeper (:func:`is_sure`; the keeper: true); a RAW+JPEG
    shot also lists its other files under "partners" (they are kept or moved with it)."""
    return {
        "threshold": threshold,
        "groups": [{"keep": str(g.keeper.path), "items": [_item(m, sure_level) for m in g.members]} for g in groups],
    }


def _item(m: Member, sure_level: float | None) -> dict:
    d = {"path": str(m.item.path), "score": round(m.score, 6), "sure": is_sure(m, sure_level)}
    if m.partners:
        d["partners"] = [str(p.path) for p in m.partners]
    return d


def json_text(groups: Sequence[Group], threshold: float, sure_level: float | None = None) -> str:
    """:func:`report_dict` as indented JSON text."""
    return json.dumps(report_dict(groups, threshold, sure_level), indent=2)


def csv_text(groups: Sequence[Group], sure_level: float | None = None) -> str:
    """One row per member of each group, the keeper included (keep = 1); a RAW+JPEG shot's other
    files in "partners" (separated by ";")."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", "path", "keep", "score", "exact", "bytes", "width", "height", "matched_as", "sure",
                "partners"])
    for n, g in enumerate(groups, 1):
        for m in g.members:
            it = m.item
            w.writerow([n, str(it.path), int(m.item is g.keeper), f"{m.score:.6f}", int(m.exact), it.size,
                        it.width or "", it.height or "", m.via or "as is", int(is_sure(m, sure_level)),
                        ";".join(str(p.path) for p in m.partners)])
    return buf.getvalue()


def write_json(groups: Sequence[Group], threshold: float, path: str | os.PathLike,
               sure_level: float | None = None) -> None:
    _atomic_write(Path(path), json_text(groups, threshold, sure_level))


def write_csv(groups: Sequence[Group], path: str | os.PathLike, sure_level: float | None = None) -> None:
    _atomic_write(Path(path), csv_text(groups, sure_level))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
