"""`seg-p2p data check PATH`: what a dataset folder holds, read exactly as `prepare` would read it.

Every label is decoded, so a check that passes means prepare will pass, and the class shares
and off-palette figures show whether the spec fits the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg_p2p.data.layouts import detect_layout
from seg_p2p.data.readers import RawDataset
from seg_p2p.data.settings import PIL_PIXEL_LIMIT
from seg_p2p.data.spec import BUILTIN_SPECS, IGNORE_INDEX, OFF_PALETTE_DISTANCE, DatasetSpec, load_spec
from seg_p2p.errors import UserError


def resolve_spec(path: Path, dataset: str | None, layout) -> tuple[DatasetSpec, str]:
    """(spec, where it came from): --dataset, else PATH/dataset.yaml, else the built-in spec of a published
    dataset's `layout` (cityscapes, voc, ade20k: its labels are always the same ids), else the built-in named like
    the folder."""
    if dataset:
        return load_spec(dataset), f"--dataset {dataset}"
    local = path / "dataset.yaml"
    if local.is_file():
        return load_spec(str(local)), str(local)
    if layout.published_spec:
        source = "built-in" if layout.published_spec in BUILTIN_SPECS else layout.published_spec
        return load_spec(layout.published_spec), f"{source}, matched by the {layout.name} layout"
    if path.resolve().name in BUILTIN_SPECS:
        return load_spec(path.resolve().name), "built-in, matched by folder name"
    raise UserError(f"{path}: no dataset spec; write {local} (name, classes with name and colour, optional "
                    "void_value / void_colours; see seg_p2p/data/specs/camvid.yaml) or pass --dataset NAME")


def size_range(shapes: set[tuple[int, int]]) -> str:
    """'WxH' when a split has one size, else the smallest and largest by area and how many sizes there are."""
    ordered = sorted(shapes, key=lambda hw: (hw[0] * hw[1], hw))
    (h0, w0), (h1, w1) = ordered[0], ordered[-1]
    return f"{w0}x{h0}" if len(ordered) == 1 else f"{w0}x{h0} .. {w1}x{h1} ({len(ordered)} sizes)"


def check_dataset(path: Path, dataset: str | None, max_pixels: int | None = PIL_PIXEL_LIMIT) -> str:
    path = Path(path)
    layout_class = detect_layout(path)  # once; a missing or unrecognised folder is the first thing to report
    spec, spec_source = resolve_spec(path, dataset, layout_class)
    raw = RawDataset(path, spec, max_pixels, layout_class)
    pixels, sizes = {}, {}
    for split in raw.splits:
        histogram, shapes = np.zeros(256, dtype=np.int64), set()
        for _, photo, mask in raw.samples(split):
            histogram += np.bincount(mask.ravel(), minlength=256)
            shapes.add(mask.shape)
        pixels[split], sizes[split] = histogram, size_range(shapes)

    layout = raw.layout
    has_void = spec.void_value is not None or bool(spec.void_colours) or layout.void is not None
    void = (f" + void ({layout.void} -> {IGNORE_INDEX})" if layout.void is not None
            else f" + void (value {spec.void_value} -> {IGNORE_INDEX})" if spec.void_value is not None
            else f" + void ({len(spec.void_colours)} colours -> {IGNORE_INDEX})" if spec.void_colours else ", no void")
    lines = [f"dataset: {path}",
             f"format:  {layout.name} ({layout.description}){layout.detail}",
             f"spec:    {spec.name} ({spec_source}): {spec.num_classes} classes{void}",
             "", f"{'split':<8}{'pairs':>7}  size (WxH)"]
    lines += [f"{split:<8}{len(pairs):>7}  {sizes[split]}" for split, pairs in raw.splits.items()]
    if "test" not in raw.splits:
        lines.append("test       none  (prepare uses val as test and carves val from train)")
    elif "val" not in raw.splits:
        lines.append("val        none  (prepare carves data.val_fraction of train, never test)")

    width = max(len(name) for name in spec.names + ["void"]) + 2
    lines += ["", "pixel share %".ljust(width) + "".join(f"{split:>8}" for split in raw.splits)]
    rows = [(name, [index]) for index, name in enumerate(spec.names)]
    rows += [("void", [IGNORE_INDEX])] if has_void else []
    for name, indices in rows:
        shares = [100 * pixels[split][indices].sum() / pixels[split].sum() for split in raw.splits]
        lines.append(name.ljust(width) + "".join(f"{share:8.2f}" for share in shares))
    absent = [name for index, name in enumerate(spec.names) if not any(pixels[s][index] for s in raw.splits)]
    if absent:
        lines.append(f"absent everywhere: {', '.join(absent)} (check the spec's classes)")
    if raw.off_palette:
        shares = ", ".join(f"{split} {100 * far / total:.1f}%" for split, (far, total) in raw.off_palette.items())
        lines += ["", f"label pixels > {OFF_PALETTE_DISTANCE} RGB units from every palette colour: {shares} "
                  "(JPEG bleeding at boundaries; decoded to the nearest colour)"]
    return "\n".join(lines)
