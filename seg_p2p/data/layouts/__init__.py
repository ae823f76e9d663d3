"""Dataset layouts: the registry (registry.py) and the built-in layouts, one module each; importing this package
registers them. A new layout is one module here, imported below, and its spec file if it is a published dataset."""

from seg_p2p.data.layouts.registry import LAYOUTS, SPLITS, Layout, Pair, detect_layout, register_layout
from seg_p2p.data.layouts import ade20k, aligned, cityscapes, index, paired, voc  # noqa: F401 - importing a layout module registers it

__all__ = ["LAYOUTS", "SPLITS", "Layout", "Pair", "detect_layout", "register_layout"]
