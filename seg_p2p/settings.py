"""The base of every settings class, and the settings a member kind builds on: below both the config and the models.

`seg_p2p.config` assembles the study's configuration and asks the member registry (seg_p2p.models) for each
member's settings class; the model modules define those classes on `MemberConfig`. Both import this module,
and it imports neither, so the configuration and the models never import each other in a circle.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from seg_p2p.errors import UserError


SEEDS = range(2**32)  # the seeds torch and numpy both accept: params.yaml's seeds and every --seed
# A name that becomes a path component (the study's name, member and strategy names, experiment and preset file
# names): no '/', so a path built from it is a direct child of the folder it is meant for (reports/, runs/, an --out
# folder); no '.', so neither '.' nor '..', and no key path in dvc.yaml's `members.${item.member}`.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
PLAIN_RULE = "letters, digits, - and _, starting with a letter or digit"


class Strict(BaseModel):
    """Base for every config section: unknown keys and silent type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OptimizerConfig(Strict):
    lr: PositiveFloat = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999


class MemberConfig(Strict):
    """Base of every member kind's settings (seg_p2p/models): `kind` names the registered kind."""

    kind: str
    optimizer: OptimizerConfig = OptimizerConfig()


def plain_name_problem(name: object) -> str | None:
    """Why `name` cannot name a file or folder of the study, or None when it can."""
    if isinstance(name, str) and PLAIN_NAME.fullmatch(name):
        return None
    return f"{name!r} is not a plain name ({PLAIN_RULE}): it names a folder or file"


def duplicate_key(node: yaml.Node) -> yaml.ScalarNode | None:
    """The first key given twice in one mapping of a composed YAML document. PyYAML keeps the last silently and DVC
    refuses the file, so a section pasted twice would be read one way by seg-p2p and not at all by `dvc repro`."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    return key
                seen.add(key.value)
            if (found := duplicate_key(value)) is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if (found := duplicate_key(item)) is not None:
                return found
    return None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
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
    if (twice := duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))) is not None:
        raise UserError(f"{path}: key '{twice.value}' is given twice (line {twice.start_mark.line + 1}); "
                        "keep one of them")
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
        message = error["msg"].removeprefix("Value error, ")
        if loc and re.match(r"[a-z_]+: ", message):  # a section's validator naming its own key: data.crop_size: ...
            return f"{key}.{message}"
        return f"{f'{key}: ' if loc else ''}{message}"
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


def deep_merge(base: dict, delta: dict) -> dict:
    """Return base with delta laid over it; nested dicts merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def experiment_settings(params: str | Path, experiment: str | Path | None = None) -> dict:
    """params.yaml with an experiment file laid over it, unvalidated. An experiment that names a `preset`
    (experiments/presets/NAME.yaml beside it: a complete, named setting such as the pix2pix paper's) builds on it:
    each section the preset holds replaces params.yaml's section whole, so nothing params.yaml sizes for the CPU
    study leaks in; the experiment's own keys are laid over that."""
    if not Path(params).exists():
        raise UserError(f"{params}: parameter file not found; run from the project folder or pass --params PATH")
    raw = read_yaml(params)
    if experiment is None:
        return raw
    delta = read_yaml(experiment)
    if (problem := plain_name_problem(Path(experiment).stem)) is not None:  # it names its DVC run and workspace
        raise UserError(f"{experiment}: the file's name {problem}; rename the file")
    preset = delta.pop("preset", None)
    if preset is not None:
        if (problem := plain_name_problem(preset)) is not None:
            raise UserError(f"{experiment}: preset: {problem}; give the name of a file of experiments/presets/")
        path = Path(experiment).parent / "presets" / f"{preset}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise UserError(f"{experiment}: preset: no {path} (known: {', '.join(known) or 'none'}); fix the name")
        raw = {**raw, **read_yaml(path)}
    return deep_merge(raw, delta)
