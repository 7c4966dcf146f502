"""The one duplicate search both the command line and the Duplicates tab run.

:func:`find_duplicates` loads the indexed photos and the pairs marked "not duplicates", adds the
vectors of mirrored and rotated copies when asked (made once per content and model, kept in the
catalog: :func:`variant_vectors`) and asks the index for every photo's neighbours down to a floor.
It is a generator of progress events ending with a :class:`DuplicateSearch`, which groups at any
threshold at or above that floor without touching the index again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..decoding import default_decoders
from ..embedder import Embedder
from ..images import VARIANTS, ImageError, load_image
from ..index import AnnIndex
from .grouping import GroupingOptions, Neighbours, group, load_items
from .types import DEFAULT_RULES, DedupError, Group, Item, NeighbourProgress, VariantProgress, VariantVectors

if TYPE_CHECKING:  # core.library imports this package: no import of it at load time
    from ..library import Library


@dataclass(frozen=True)
class DuplicateSearch:
    """The last event of :func:`find_duplicates`."""

    items: list[Item]  # the indexed photos, in index order
    ignored: frozenset[tuple[str, str]]  # content-hash pairs marked "not duplicates" (sorted pairs)
    neighbours: Neighbours  # every pair at or above the floor
    invariant: bool  # whether mirrored/rotated copies were matched too
    skipped: list[tuple[str, str]]  # (path, reason): photos without mirrored/rotated copies

    def options(self, threshold: float, *, min_score: float | None = None, max_score: float | None = None,
                rules: tuple[str, ...] = DEFAULT_RULES, reference: tuple[Path, ...] = ()) -> GroupingOptions:
        """Grouping options that leave out the pairs marked "not duplicates"."""
        return GroupingOptions(threshold, min_score, max_score, tuple(rules), tuple(reference), self.ignored)

    def groups(self, threshold: float, **kw) -> list[Group]:
        """The groups at *threshold* (>= the floor); keywords as :meth:`options`. No index access."""
        return group(self.neighbours, self.options(threshold, **kw))


def index_embedder(index: AnnIndex, *, precision: str = "auto", threads: int | None = None) -> Embedder:
    """The embedder the index was built with (nothing is loaded until it embeds)."""
    embedder = Embedder.from_spec(index.model, precision=precision, threads=threads)
    if embedder.fingerprint != index.model_fingerprint:
        raise DedupError("the index's model cannot be rebuilt here; re-index the folder first")
    return embedder


def find_duplicates(library: Library, index: AnnIndex, *, floor: float, invariant: bool = False,
                    should_stop: Callable[[], bool] | None = None, precision: str = "auto",
                    threads: int | None = None, batch_size: int = 32, workers: int | None = None,
                    ) -> Iterator[VariantProgress | NeighbourProgress | DuplicateSearch]:
    """Search *library*'s *index* for pairs scoring at least *floor*.

    Events: :class:`VariantProgress` (with *invariant*: mirrored/rotated copies embedded, photos
    done of total), then :class:`NeighbourProgress` (photos searched of total), then one
    :class:`DuplicateSearch`. A stop while the copies are made ends the generator without a
    result (the copies made so far are kept); a stop during the search ends it with the pairs
    found so far. *precision* and *threads* are the embedder's, *batch_size* and *workers* those
    of the copies' embedding and decoding.
    """
    stop = should_stop or (lambda: False)
    with library.open_catalog() as cat:
        items = load_items(cat, index, library.folder)
        ignored = frozenset(cat.ignored_pairs())
    variants, skipped = None, []
    if invariant:
        embedder = index_embedder(index, precision=precision, threads=threads)
        for ev in variant_vectors(library, embedder, [(it.hash, it.path) for it in items],
                                  batch_size=batch_size, workers=workers, should_stop=stop):
            if isinstance(ev, VariantVectors):
                variants, skipped = ev.vectors, ev.skipped
            else:
                yield ev
        if stop():
            return
    neighbours = None
    for ev in Neighbours.search(index, items, floor=floor, should_stop=stop, variants=variants):
        if isinstance(ev, Neighbours):
            neighbours = ev
        else:
            yield ev
    yield DuplicateSearch(items, ignored, neighbours, invariant, skipped)


def variant_vectors(
    library: Library, embedder: Embedder, files: list[tuple[str, Path]], kinds: tuple[str, ...] = tuple(VARIANTS),
    *, batch_size: int = 32, workers: int | None = None, should_stop: Callable[[], bool] | None = None,
) -> Iterator[VariantProgress | VariantVectors]:
    """Vectors of mirrored and rotated copies of *files* ((content hash, path) pairs).

    Made once per content and model and kept in the catalog, so only new photos cost
    anything on the next run. A stop keeps every finished batch; the final event then
    holds what exists so far.
    """
    from ..library import variant_model

    unknown = [k for k in kinds if k not in VARIANTS]
    if unknown:
        raise DedupError(f"unknown variant {unknown[0]!r}; variants: {', '.join(VARIANTS)}")
    should_stop = should_stop or (lambda: False)
    models = {k: variant_model(embedder.fingerprint, k) for k in kinds}
    skipped: list[tuple[str, str]] = []
    with library.open_catalog() as cat:
        have = {k: cat.hashes_with_vectors(m) for k, m in models.items()}
        todo: dict[str, Path] = {}
        for h, path in files:
            if h not in todo and any(h not in have[k] for k in kinds):
                todo[h] = path
        items = list(todo.items())
        min_side = embedder.preprocess.min_side

        def prepare(item: tuple[str, Path]):
            h, path = item
            try:
                im = load_image(path, min_side).image
            except ImageError as exc:
                return h, path, None, str(exc)
            return h, path, {k: embedder.preprocess(VARIANTS[k](im)) for k in kinds if h not in have[k]}, ""

        done = 0
        yield VariantProgress(0, len(items))
        decoders = max(1, workers or default_decoders())
        with ThreadPoolExecutor(decoders, thread_name_prefix="simviewer-variants") as pool:
            for start in range(0, len(items), batch_size):
                if should_stop():
                    break
                batch = list(pool.map(prepare, items[start : start + batch_size]))
                _store_batch(cat, embedder, models, batch, batch_size, skipped)
                done += len(batch)
                yield VariantProgress(done, len(items))
        wanted = {h for h, _ in files}
        vectors = {k: {h: v for h, v in cat.vectors_for(m).items() if h in wanted} for k, m in models.items()}
    yield VariantVectors(vectors, skipped)


def _store_batch(cat, embedder: Embedder, models: dict[str, str], batch: list, batch_size: int,
                 skipped: list[tuple[str, str]]) -> None:
    """Embed one batch of prepared copies and keep their vectors in the catalog."""
    tensors, owners = [], []
    for h, path, prepared, reason in batch:
        if prepared is None:
            skipped.append((str(path), reason))
            continue
        for k, t in prepared.items():
            tensors.append(t)
            owners.append((k, h))
    for s in range(0, len(tensors), batch_size):
        vecs = embedder.embed_tensors(torch.stack(tensors[s : s + batch_size]))
        chunk = owners[s : s + batch_size]
        for k in models:
            pairs = [(h, v) for (kk, h), v in zip(chunk, vecs) if kk == k]
            if pairs:
                cat.put_vectors(models[k], pairs)

