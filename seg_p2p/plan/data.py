"""The image sizes of each split a study will prepare, known before `prepare` runs.

The synthetic dataset's come from its settings; a dataset on disk's from its files' headers, split as `prepare`
splits it (val carved from train, val as test where the test labels are withheld); a published dataset that is
not downloaded yet from its published image counts at a stated nominal size, so the paper-scale plans can be made
on any machine (README, "What a study costs").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seg_p2p.data.settings import DataConfig

Sizes = list[tuple[int, int]]


@dataclass(frozen=True)
class Published:
    """A published dataset's labelled images as downloaded, before prepare's val carving."""

    train: int
    val: int
    test: int  # 0: its test labels are withheld, and prepare scores on val
    size: tuple[int, int]  # (height, width) assumed for every image
    source: str


# Counts as the datasets' own pages give them; sizes as their files have them, ADE20K's an assumption (its images
# vary in size: 512 x 683 is the landscape shape with a 512-px shorter side, the size most of them are stored at).
PUBLISHED = {
    "cityscapes": Published(2975, 500, 0, (1024, 2048), "cityscapes-dataset.com: 2975 train + 500 val, 2048x1024"),
    "voc": Published(1464, 1449, 0, (375, 500), "Pascal VOC 2012 segmentation: 1464 train + 1449 val, 500x375"),
    "ade20k": Published(20210, 2000, 0, (512, 683), "sceneparsing.csail.mit.edu: 20,210 train + 2,000 val; "
                                                    "512x683 assumed"),
    "camvid": Published(367, 101, 233, (360, 480), "CamVid (SegNet split): 367 / 101 / 233 at 480x360"),
    "facades": Published(400, 0, 106, (256, 256), "CMP facades as in ../shared: 400 train + 106 test, 256x256"),
}


@dataclass(frozen=True)
class SplitSizes:
    """Each split's image sizes (height, width), and where they come from (a line of the plan)."""

    train: Sizes
    val: Sizes
    test: Sizes
    source: str

    def split(self, name: str) -> Sizes:
        return getattr(self, name)


def split_sizes(data: DataConfig) -> SplitSizes:
    if data.dataset == "synthetic":
        side = (data.synthetic.size, data.synthetic.size)
        counts = data.synthetic
        return SplitSizes([side] * counts.num_train, [side] * counts.num_val, [side] * counts.num_test,
                          f"synthetic, {side[0]} px")
    if data.root is not None and Path(data.root).is_dir():
        return _from_headers(data)
    name = Path(data.dataset).stem
    if name not in PUBLISHED:
        from seg_p2p.errors import UserError

        raise UserError(f"data.root: '{data.root}' is not a folder, and '{data.dataset}' has no published size to "
                        "plan with; point data.root at the dataset")
    return _published(PUBLISHED[name], data.val_fraction, data.root)


def _from_headers(data: DataConfig) -> SplitSizes:
    """prepare's split of the dataset on disk, sized from the photos' headers (no pixel is decoded)."""
    from seg_p2p.data.prepare import split_plan
    from seg_p2p.data.readers import RawDataset
    from seg_p2p.data.spec import load_spec

    raw = RawDataset(Path(data.root), load_spec(data.dataset), data.max_image_pixels)
    plan = split_plan(raw, data.val_fraction)
    sizes = {split: [raw.photo_size(pair) for pair in pairs] for split, pairs in plan.items()}
    return SplitSizes(sizes["train"], sizes["val"], sizes["test"], f"{data.root} ({raw.format} layout, headers)")


def _published(published: Published, val_fraction: float, root: str | None) -> SplitSizes:
    train, val, test = published.train, published.val, published.test
    if test == 0:  # val becomes test, and val is carved from train (seg_p2p.data.prepare.split_plan)
        test, val = val, 0
    if val == 0:  # carved from train when there is none
        val = max(1, round(val_fraction * train))
        train -= val
    size = published.size
    return SplitSizes([size] * train, [size] * val, [size] * test,
                      f"{root} not found: published counts ({published.source})")
