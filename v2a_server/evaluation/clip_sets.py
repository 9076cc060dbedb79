"""Sets of clips to score, and their scores in one table: what ``v2a eval`` runs.

Folder mode pairs every audio file of a generated folder (or of the reference folder when no
generated folder is given) with the file of the same name, or failing that the same stem, in the
reference and video folders. Manifest mode reads JSON lines with any of the fields
``generated_audio``, ``reference_audio``, ``video`` (and an optional ``id``); relative paths
are resolved against the manifest's folder. Each clip gets every metric its inputs allow
(``metrics.evaluate_clip``); means are taken per metric over the clips that have it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
MANIFEST_FIELDS = ("generated_audio", "reference_audio", "video")

# Text-table columns: metric key → short header (the JSON keeps the full keys). Metrics that no
# clip has are dropped from the table.
TABLE_COLUMNS = {
    "aa_align": "AA",
    "aa_align_one_to_one": "AA 1:1",
    "onset_precision": "P",
    "onset_recall": "R",
    "onset_f1": "F1",
    "av_align": "AV",
    "av_align_one_to_one": "AV 1:1",
    "av_align_reference": "AV ref",
    "av_align_reference_one_to_one": "AV ref 1:1",
    "aa_align_gated": "AA g",
    "aa_align_one_to_one_gated": "AA 1:1 g",
    "onset_f1_gated": "F1 g",
    "av_align_gated": "AV g",
    "av_align_reference_gated": "AV ref g",
    "n_onsets_generated": "#on gen",
    "n_onsets_reference": "#on ref",
    "n_onsets_generated_gated": "#on gen g",
    "n_onsets_reference_gated": "#on ref g",
    "n_video_events": "#vid ev",
}
TABLE_LEGEND = (
    "AA/AV: reference AA-Align/AV-Align (not one-to-one, can exceed 1); 1:1: one-to-one matched; "
    "P/R/F1: onset precision/recall/F1; AV ref: AV-Align of the reference audio; #: event counts; "
    "g: on gated onsets (an onset needs >= -50 dBFS in the 100 ms centred on it; the JSON has every "
    "*_gated metric)"
)


class EvalInputError(Exception):
    """An input of `v2a eval` is missing, unreadable or malformed; the message names it."""



def _find_counterpart(folder: Path, name: str, suffixes: tuple[str, ...]) -> Path | None:
    exact = folder / name
    if exact.is_file():
        return exact
    stem = Path(name).stem
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _require_folder(path: Path, flag: str) -> None:
    if not path.is_dir():
        raise EvalInputError(f"{flag} folder not found: {path}")


def items_from_folders(
    generated: Path | None,
    reference: Path | None,
    videos: Path | None,
    *,
    skip_missing: bool = False,
) -> list[dict]:
    """Clips of folder mode, keyed by the file names of the generated (else reference) folder.

    Args:
        generated: Folder of generated audio, or None.
        reference: Folder of ground-truth audio files (or videos with their soundtrack), or None.
        videos: Folder of videos, or None.
        skip_missing: Skip a clip whose counterpart is missing instead of failing.

    Returns:
        ``[{"id", "generated_audio", "reference_audio", "video"}]`` with absent inputs as None.
    """
    for path, flag in (
        (generated, "--generated"),
        (reference, "--reference"),
        (videos, "--videos"),
    ):
        if path is not None:
            _require_folder(path, flag)
    primary = generated if generated is not None else reference
    if primary is None:
        raise EvalInputError("folder mode needs --generated or --reference")
    primary_suffixes = AUDIO_SUFFIXES if generated is not None else AUDIO_SUFFIXES + VIDEO_SUFFIXES
    files = sorted(
        p for p in primary.iterdir() if p.is_file() and p.suffix.lower() in primary_suffixes
    )
    if not files:
        raise EvalInputError(f"no audio files ({', '.join(primary_suffixes)}) in {primary}")
    items = []
    for path in files:
        item = {"id": path.stem, "generated_audio": None, "reference_audio": None, "video": None}
        item["generated_audio" if generated is not None else "reference_audio"] = path
        missing = None
        if generated is not None and reference is not None:
            item["reference_audio"] = _find_counterpart(
                reference, path.name, AUDIO_SUFFIXES + VIDEO_SUFFIXES
            )
            if item["reference_audio"] is None:
                missing = f"no reference for {path.name} in {reference}"
        if videos is not None and missing is None:
            item["video"] = _find_counterpart(videos, path.name, VIDEO_SUFFIXES)
            if item["video"] is None:
                missing = f"no video for {path.name} in {videos}"
        if missing is not None:
            if skip_missing:
                print(f"v2a eval: skipping {path.name}: {missing}", file=sys.stderr)
                continue
            raise EvalInputError(
                f"{missing} (tried the same name, then {path.stem} + a known suffix)"
            )
        items.append(item)
    return items


def items_from_manifest(manifest: Path) -> list[dict]:
    """Clips of a JSONL manifest; relative paths are taken relative to the manifest's folder.

    Args:
        manifest: File with one JSON object per line (blank lines ignored).

    Returns:
        ``[{"id", "generated_audio", "reference_audio", "video"}]`` with absent inputs as None.
    """
    if not manifest.is_file():
        raise EvalInputError(f"manifest not found: {manifest}")
    items = []
    base = manifest.parent
    for line_no, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"{where}: invalid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise EvalInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
        item = {"id": record.get("id")}
        for field in MANIFEST_FIELDS:
            value = record.get(field)
            if value in (None, ""):
                item[field] = None
                continue
            if not isinstance(value, str):
                raise EvalInputError(
                    f"{where}: field {field!r} must be a path string, got {value!r}"
                )
            path = Path(value)
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise EvalInputError(f"{where}: {field} file not found: {path}")
            item[field] = path
        if all(item[field] is None for field in MANIFEST_FIELDS):
            raise EvalInputError(f"{where}: none of {', '.join(MANIFEST_FIELDS)} is given")
        if item["id"] is None:
            first = next(item[field] for field in MANIFEST_FIELDS if item[field] is not None)
            item["id"] = first.stem
        item["id"] = str(item["id"])
        items.append(item)
    if not items:
        raise EvalInputError(f"manifest {manifest} has no entries")
    return items


def summarize(results: list[dict]) -> tuple[dict[str, float], dict[str, int]]:
    """Mean of each metric over the clips that have it, and how many clips that is."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for result in results:
        for key, value in result["metrics"].items():
            sums[key] = sums.get(key, 0.0) + float(value)
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}, counts


def format_table(results: list[dict], mean: dict[str, float]) -> str:
    """A plain aligned text table: one row per clip, then the means."""
    columns = [c for c in TABLE_COLUMNS if c in mean]

    def cell(value, column):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if column.startswith("n_") and float(value).is_integer():
            return str(int(value))
        return f"{value:.4f}"

    rows = [[r["id"], *(cell(r["metrics"].get(c), c) for c in columns)] for r in results]
    rows.append(
        ["MEAN", *(f"{mean[c]:.1f}" if c.startswith("n_") else cell(mean[c], c) for c in columns)]
    )
    header = ["clip", *(TABLE_COLUMNS[c] for c in columns)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row):
        return "  ".join(
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(len(row))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join(
        [line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1]), "", TABLE_LEGEND]
    )


def score_clips(items: list[dict], tolerance_s: float, length_s: float | None,
                progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Every metric each clip's inputs allow: ``[{"id", <inputs as str>, "metrics"}]``.

    Raises:
        EvalInputError: a clip fails to score (the message names the clip).
    """
    from v2a_server.evaluation import metrics

    results = []
    for index, item in enumerate(items, start=1):
        if progress is not None:
            progress(index, len(items), item["id"])
        try:
            values = metrics.evaluate_clip(
                generated_audio=item["generated_audio"],
                reference_audio=item["reference_audio"],
                video=item["video"],
                tolerance_s=tolerance_s,
                length_s=length_s,
            )
        except Exception as exc:  # noqa: BLE001 - reported naming the clip
            raise EvalInputError(f"clip {item['id']}: {type(exc).__name__}: {exc}") from exc
        results.append(
            {
                "id": item["id"],
                **{
                    field: None if item[field] is None else str(item[field])
                    for field in MANIFEST_FIELDS
                },
                "metrics": values,
            }
        )
    return results
