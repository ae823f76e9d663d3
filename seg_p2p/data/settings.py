"""The data layer's settings (params.yaml's `data:`), readable alone: `prepare` validates this section only, so the
prepare stage runs, and depends on, no model code (editing a model never re-decodes a dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from seg_p2p.errors import UserError
from seg_p2p.settings import Strict, error_text, experiment_settings

PIL_PIXEL_LIMIT = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS (1024**3 // 4 // 3), its decompression-bomb guard


class SyntheticConfig(Strict):
    """The embedded scene generator (seg_p2p.data.synthetic)."""

    size: Annotated[int, Field(ge=32, le=512)] = 64
    num_train: PositiveInt = 240
    num_val: PositiveInt = 48
    num_test: PositiveInt = 48
    seed: int = 0


class DataConfig(Strict):
    dataset: str = "synthetic"  # synthetic, a built-in spec (seg_p2p/data/specs/*.yaml) or a spec YAML path
    root: str | None = None  # folder of the raw dataset; unused for synthetic
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1  # carved from train when there is no val split
    load_size: PositiveInt = 72  # resize mode's pix2pix jitter: resize to load_size ...
    crop_size: PositiveInt = 64  # ... then random crop; the model's input size (resize mode: the evaluation size)
    scale_range: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = [0.5, 2.0]  # slide mode: random rescale before the crop
    flip: bool = True
    # Images of more pixels are refused, as PIL refuses decompression bombs; raise it for trusted large images
    # (orthophotos, slides), null for no limit.
    max_image_pixels: PositiveInt | None = PIL_PIXEL_LIMIT
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.crop_size > self.load_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than load_size {self.load_size}; "
                             "set load_size >= crop_size")
        if self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range {self.scale_range} runs backwards; give [low, high] with low <= high")
        return self


def load_data_config(params: str | Path, experiment: str | Path | None = None) -> DataConfig:
    """The `data` section of params.yaml with an experiment laid over it, validated as load_config validates it."""
    source = str(params) if experiment is None else f"{experiment} (over {params})"
    try:
        return DataConfig.model_validate(experiment_settings(params, experiment).get("data", {}))
    except ValidationError as exc:
        raise UserError(f"{source}: {error_text(exc.errors()[0], ('data',))}") from None
