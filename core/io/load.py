"""Reading microscopy images: the one loader the pages, the CLI and the tests use, from files
to :class:`CellImage` objects with their ground truth and plates.

Files arrive as ``(name, bytes)`` pairs (browser uploads, zip members or files on disk).
Every problem with one file becomes a :class:`FileProblem` naming that file and the fix;
the other files still load. Decoding one file is :mod:`core.io.decode`, the limits
:mod:`core.io.guards`, unpacking zips :mod:`core.io.entries`, and what role a file plays
:mod:`core.io.roles`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from core.data.images import HPA_CHANNELS, UNASSIGNED, CellImage, ChannelInfo, channels_from_names, default_channels
from core.data.plates import BatchTable, parse_batch_table
from core.io.decode import read_image, read_labels
from core.io.entries import Entry, bytes_entry, disk_entries, read_entry, zip_entries
from core.io.guards import FileProblem, ImageReadError
from core.io.roles import (
    HPA_NAME,
    HPA_ORDER,
    IMAGE_EXTENSIONS,
    MASK_FOLDERS,
    MASK_SUFFIX,
    TABLE_EXTENSIONS,
    key_and_role,
)


@dataclass
class LoadReport:
    images: list[CellImage] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    batch_table: BatchTable | None = None


def load_files(
    files: Iterable[tuple[str, bytes]],
    *,
    plane: int | None = None,
    existing_names: Iterable[str] = (),
    progress: Callable[[float, str], None] | None = None,
) -> LoadReport:
    """Read uploaded files into :class:`CellImage` objects, collecting a problem per bad file.

    Zips are unpacked one member at a time (folders become batches; a folder wrapping the
    whole zip is dropped), ``<id>_red/_green/_blue/_yellow`` files become one 4-channel HPA
    image, ``*_mask``/``*_labels``/``*_gt`` files or files in a ``masks/`` folder become
    ground truth of the image with the same name, and a ``.csv``/``.tsv`` table assigns
    batches. ``progress(fraction, file_name)`` is called as files are decoded.
    """
    report = LoadReport()
    with ExitStack() as zips:
        entries: list[Entry] = []
        for name, data in files:
            if name.lower().endswith(".zip"):
                entries += zip_entries(name, io.BytesIO(data), report.problems, zips)
            else:
                entries.append(bytes_entry(name, data))
        _load_entries(entries, report, plane=plane, existing_names=existing_names, progress=progress)
    return report


def load_paths(paths: Iterable[str | os.PathLike], *, plane: int | None = None) -> LoadReport:
    """:func:`load_files` for files and folders on disk (folders are read recursively).

    Files are read one at a time as they are decoded, zips straight from disk.
    """
    report = LoadReport()
    with ExitStack() as zips:
        entries = [e for p in map(Path, paths) for e in disk_entries(p, report.problems, zips)]
        _load_entries(entries, report, plane=plane)
    return report


def load_images_and_masks(images: str | os.PathLike, masks: str | os.PathLike, *, plane: int | None = None
                          ) -> LoadReport:
    """Images from one folder and their ground truth from another, matched by name exactly as an
    upload of both folders is: ``masks/x.tif`` or ``masks/x_mask.tif`` is the ground truth of the
    image ``x`` (``sub/x`` for one in a subfolder ``sub``)."""
    report = LoadReport()
    with ExitStack() as zips:
        entries = disk_entries(Path(images), report.problems, zips)
        for entry in disk_entries(Path(masks), report.problems, zips):
            # Seen as if in a masks/ folder beside its image, unless its name already says mask.
            p = PurePosixPath(entry.path)
            if not MASK_SUFFIX.match(p.stem) and (not p.parent.name or p.parent.name.lower() not in MASK_FOLDERS):
                entry = replace(entry, path=str(p.parent / "masks" / p.name) if p.parent.name else f"masks/{p.name}")
            entries.append(entry)
        _load_entries(entries, report, plane=plane)
    return report


def _load_entries(
    entries: list[Entry],
    report: LoadReport,
    *,
    plane: int | None,
    existing_names: Iterable[str] = (),
    progress: Callable[[float, str], None] | None = None,
) -> None:
    """Decode the entries one at a time into ``report``."""
    problems = report.problems
    taken = set(existing_names)

    images: dict[str, tuple[np.ndarray, list[str], str, str]] = {}  # key -> pixels, notes, batch, source
    channels_of: dict[str, tuple[ChannelInfo, ...]] = {}
    masks: dict[str, Entry] = {}
    hpa: dict[str, dict[str, tuple[np.ndarray, str]]] = {}
    hpa_batch: dict[str, str] = {}

    for i, entry in enumerate(entries):
        if progress is not None:
            progress(i / max(len(entries), 1), entry.path)
        ext = PurePosixPath(entry.path).suffix.lower()
        if ext in TABLE_EXTENSIONS:
            try:
                table = parse_batch_table(read_entry(entry, table=True), sep="\t" if ext == ".tsv" else ",")
                # One table per folder (e.g. a batches.csv in each plate's folder): all of them count.
                old = report.batch_table.rows if report.batch_table is not None else {}
                report.batch_table = BatchTable({**old, **table.rows})
            except ValueError as exc:
                problems.append(FileProblem(entry.shown, str(exc)))
            continue
        if ext not in IMAGE_EXTENSIONS:
            problems.append(
                FileProblem(
                    entry.shown,
                    f"unsupported file type {ext or '(no extension)'}; CellScope reads PNG, JPEG, TIFF, "
                    "a CSV/TSV batch table, or a ZIP of these",
                )
            )
            continue
        key, role, batch = key_and_role(entry.path)
        if role == "mask":
            if key in masks:
                problems.append(FileProblem(entry.shown, f"a second ground truth for {key!r}; kept the first"))
            else:
                masks[key] = entry
            continue
        try:
            decoded = read_image(read_entry(entry), entry.path, plane=plane)
        except ImageReadError as exc:
            problems.append(FileProblem(entry.shown, str(exc)))
            continue
        pixels, notes = decoded.pixels, decoded.notes
        hpa_match = HPA_NAME.match(key)
        if hpa_match:
            hpa.setdefault(hpa_match["id"], {})[hpa_match["color"].lower()] = (pixels, entry.path)
            hpa_batch[hpa_match["id"]] = batch
            continue
        if key in images or key in taken:
            problems.append(
                FileProblem(entry.shown, f"another image is already named {key!r}; rename one of them and upload again")
            )
            continue
        images[key] = (pixels, notes, batch, entry.path)
        if decoded.channel_names:
            channels_of[key] = channels_from_names(decoded.channel_names)

    for sample_id, colors in hpa.items():
        if len(colors) == 1:  # a lone *_red file is just an image with that name
            (color, (pixels, path)), = colors.items()
            images.setdefault(f"{sample_id}_{color}", (pixels, [], hpa_batch[sample_id], path))
            continue
        planes = []
        for color in HPA_ORDER:
            if color in colors:
                pixels, _ = colors[color]
                # HPA website JPEGs are tinted RGB; the brightest component is the signal.
                planes.append(pixels.max(axis=2))
        shapes = {p.shape for p in planes}
        paths = ", ".join(path for _, path in colors.values())
        if len(shapes) > 1:
            problems.append(
                FileProblem(sample_id, f"HPA channel files differ in size ({paths}); all channels must match")
            )
            continue
        if len({p.dtype for p in planes}) > 1:
            planes = [p.astype(np.float32) for p in planes]
        if sample_id in images or sample_id in taken:
            problems.append(FileProblem(sample_id, "another image already has this name; rename and upload again"))
            continue
        present = [c for c in HPA_ORDER if c in colors]
        images[sample_id] = (np.stack(planes, axis=2), [f"HPA set: {', '.join(present)}"], hpa_batch[sample_id], paths)
        channels_of[sample_id] = tuple(ch for ch in HPA_CHANNELS if ch.name in present)

    gts: dict[str, np.ndarray] = {}
    gt_notes: dict[str, list[str]] = {}
    for key, entry in masks.items():
        path = entry.shown
        if key not in images:
            problems.append(
                FileProblem(path, f"ground truth for {key!r}, but no image with that name was uploaded with it")
            )
            continue
        try:
            labels, notes = read_labels(read_entry(entry), entry.path)
        except ImageReadError as exc:
            problems.append(FileProblem(path, f"ground truth not used: {exc}"))
            continue
        shape = images[key][0].shape[:2]
        if labels.shape != shape:
            problems.append(
                FileProblem(
                    path,
                    f"ground truth is {labels.shape[1]}x{labels.shape[0]} but the image is {shape[1]}x{shape[0]}; "
                    "it was not attached",
                )
            )
            continue
        gts[key] = labels
        gt_notes[key] = notes

    for key, (pixels, notes, batch, source) in sorted(images.items()):  # not the browser's file order
        report.images.append(
            CellImage(
                name=key,
                pixels=pixels,
                channels=channels_of.get(key, default_channels(pixels.shape[2])),
                batch=batch or UNASSIGNED,
                gt=gts.get(key),
                source=source,
                notes=tuple(notes + gt_notes.get(key, [])),
            )
        )
    if report.batch_table is not None:
        from core.data.plates import apply_batch_table

        report.images, _ = apply_batch_table(report.images, report.batch_table)
