"""The base of every settings class, and the settings a member kind builds on: below both the config and the models.

`seg_p2p.config` assembles the study's configuration and asks the member registry (seg_p2p.models) for each
member's settings class; the model modules define those classes on `MemberSettings`. Both import this module,
and it imports neither, so the configuration and the models never import each other in a circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from seg_p2p.errors import UserError


class Strict(BaseModel):
    """Base for every config section: unknown keys and silent type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OptimizerConfig(Strict):
    lr: PositiveFloat = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999


class MemberSettings(Strict):
    """Base of every member kind's settings (seg_p2p/models): `kind` names the registered kind."""

    kind: str
    optimizer: OptimizerConfig = OptimizerConfig()


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; point at a YAML file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc}); point at a readable YAML file") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level; see params.yaml for the layout")
    return data


def validation_message(source: str, exc: ValidationError) -> str:
    """One line naming the first bad key and what is wrong with it."""
    return f"{source}: {error_text(exc.errors()[0])}"


def error_text(error: dict, prefix: tuple = ()) -> str:
    """A pydantic error as 'key: what is wrong; what to do'; `prefix` is where the validated mapping sits."""
    loc = [*prefix, *error["loc"]]
    key = ".".join(str(part) for part in loc) or "(top level)"
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return f"unknown key '{key}'; remove it or fix its spelling (see params.yaml for the valid keys)"
    if kind == "value_error":  # our own validators: the message names the key and says what to do
        return f"{f'{key}: ' if loc else ''}{error['msg'].removeprefix('Value error, ')}"
    got = "" if isinstance(value, (dict, list)) else f" (got {value!r:.60})"
    hint = ""
    if isinstance(value, str) and kind in ("float_type", "int_type"):
        try:
            float(value)
            hint = (" (YAML reads 1e-3 as text: write 1.0e-3)" if "e" in value.lower() else
                    " (a quoted number is text: remove the quotes)")
        except ValueError:
            pass
    return f"{key}: {error['msg']}{got}{hint}; fix this value"
