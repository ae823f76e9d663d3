"""PyTorch view of a prepared split: augmented photo in [-1, 1] and class-id mask per item.

Augmentation randomness is a pure function of (seed, epoch, index): the transform is reseeded for
every item, so a resumed run and any number of DataLoader workers draw exactly the same crops and
flips. Workers hold copies of the dataset: call set_epoch before creating each epoch's iterator
(not with persistent_workers, whose copies would keep the old epoch).
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch

from seg_p2p.data.prepare import PreparedData
from seg_p2p.data.transforms import photo_tensor


def item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SegmentationDataset(torch.utils.data.Dataset):
    def __init__(self, data: PreparedData, split: str, transform: A.Compose, seed: int = 0):
        self.data, self.split, self.transform, self.seed = data, split, transform, seed
        self.epoch = 0
        self.length = len(data.names(split))
        self._arrays = None  # (photos, masks) memory maps, opened lazily in each process

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}  # reopen the memory maps rather than pickling their contents

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if self._arrays is None:
            self._arrays = self.data.photos(self.split), self.data.masks(self.split)
        photos, masks = self._arrays
        self.transform.set_random_seed(item_seed(self.seed, self.epoch, index))
        out = self.transform(image=np.array(photos[index]), mask=np.array(masks[index]))
        return {"photo": photo_tensor(out["image"]), "mask": torch.from_numpy(np.ascontiguousarray(out["mask"])).long(), "index": index}
