"""Near-duplicate groups, keeper rules, and file actions that can always be undone.

Grouping rule (no chaining): candidate pairs are the Annoy neighbours with cosine >= threshold
(inside the optional [min, max] range, minus pairs marked "not duplicates"). Within each connected
set of candidates, the photo the keeper rules prefer becomes a keeper and takes every photo that
is itself within the threshold of it; the rest of the set is grouped again the same way. So every
member of a group is within the threshold of its keeper: A~B and B~C never put A and C together
unless A~C too (or one of them is the keeper both are close to).

Two levels inside a group: *sure* duplicates (byte-identical to the keeper, or at least as alike
as the calibration's sure level, ``Calibration.sure_level``) and *similar* members, above the
threshold but below that level, which may be another photo of the same subject: those are shown
to be checked and are never planned for removal unless asked for (:func:`plan_removals`).

Neighbours are computed once per index (down to a floor below any threshold the user will try),
so moving the threshold only re-filters and regroups cached pairs.

Modules: ``types`` (the values passed around), ``grouping`` (neighbour search and groups),
``rules`` (keeper rules, what a clean-up moves), ``finder`` (the one duplicate search the command
line and the window run), ``actions`` (journal, moves, trash, undo) and ``report`` (JSON, CSV).
Every public name is importable from this package.
"""

from __future__ import annotations

from ..images import file_digest  # the content hash the clean-ups check before and after a move
from .actions import (
    ACTION_MODES,
    ActionProgress,
    ActionResult,
    Journal,
    execute,
    journalled_hashes,
    latest_journal,
    locate_in_trash,
    trash_dirs,
    undo,
)
from .finder import DuplicateSearch, find_duplicates, index_embedder, variant_vectors
from .grouping import GroupingOptions, Neighbours, group, load_items, starting_threshold, threshold_floor
from .report import csv_text, json_text, report_dict, write_csv, write_json
from .rules import in_folders, last_copy, plan_removals, rule_key
from .types import (
    DEFAULT_RULES,
    RULE_HELP,
    VIA,
    DedupError,
    Group,
    Item,
    Member,
    NeighbourProgress,
    PlannedMove,
    VariantProgress,
    VariantVectors,
    is_sure,
)

__all__ = [
    "ACTION_MODES",
    "DEFAULT_RULES", "RULE_HELP", "VIA", "ActionProgress", "ActionResult", "DedupError", "DuplicateSearch", "Group",
    "GroupingOptions", "Item", "Journal", "Member", "NeighbourProgress", "Neighbours", "PlannedMove",
    "VariantProgress", "VariantVectors", "csv_text", "execute", "file_digest", "find_duplicates", "group", "in_folders",
    "index_embedder", "is_sure", "journalled_hashes", "json_text", "last_copy", "latest_journal", "load_items",
    "locate_in_trash", "plan_removals", "report_dict", "rule_key", "starting_threshold", "threshold_floor",
    "trash_dirs", "undo", "variant_vectors", "write_csv", "write_json",
]
