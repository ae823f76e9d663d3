"""Data layer: dataset specs, raw readers, the synthetic default dataset, the prepared cache, augmentation."""

from seg_p2p.data.spec import IGNORE_INDEX, DatasetSpec, load_spec

__all__ = ["IGNORE_INDEX", "DatasetSpec", "load_spec"]
