"""Configuration models and the one YAML loader.

Every config a user writes (a :class:`~neurofm.Recipe`, a model config, the YAML files of
``neurofm preprocess``/``pretrain``/``finetune``) derives from :class:`StrictConfig`, so an
unknown key fails with the closest valid key instead of being silently ignored.
:func:`load_config` reads a YAML file (or takes a mapping), applies ``key.sub=value``
overrides and validates: every problem comes back as one line of a
:class:`~neurofm.errors.ConfigError`, never as a raw pydantic error.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import ConfigError, did_you_mean

Model = TypeVar("Model", bound=BaseModel)


class StrictConfig(BaseModel):
    """Frozen, no extra keys; ``Model(smaple=1)`` says "did you mean 'sample'?"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="wrap")
    @classmethod
    def _suggest(cls, data, handler):
        """Unknown keys with the closest known one, and every other problem, one per line."""
        unknown = [k for k in data if k not in cls.model_fields] if isinstance(data, dict) else []
        if not unknown:
            return handler(data)
        lines = [f"unknown {cls.__name__} field {key!r}{did_you_mean(key, cls.model_fields)}"
                 for key in unknown]  # fmt: skip
        known = {k: v for k, v in data.items() if k not in unknown}
        try:
            handler(known)
        except ValidationError as err:  # the rest of the problems, in the same message
            lines += config_problems(err, known)
        raise ValueError("\n".join(lines))

    def __init__(self, **data):
        """Validate every field; a bad value raises ``ConfigError``, one line per problem."""
        try:
            super().__init__(**data)
        except ValidationError as err:
            problems = config_problems(err, data)
            raise ConfigError(f"invalid {type(self).__name__}: " + "\n  ".join(problems)) from None

    def replace(self, **changes):
        """A validated copy with some fields changed."""
        return type(self)(**{**self.model_dump(), **changes})


def _read_yaml(path: Path) -> object:
    from omegaconf import OmegaConf

    if not path.is_file():
        raise ConfigError(f"config {path} does not exist: give the path of a YAML file")
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:  # YAML syntax, interpolation: all the user's file
        reason = " ".join(str(err).split())
        raise ConfigError(f"{path} is not readable YAML: {reason}") from None


def _apply_override(data: dict, item) -> None:
    """``"recipe.sfreq=250"`` into ``data`` (the value parsed as YAML: 250, [1, 2], null);
    a ``(key, value)`` pair sets the value as it is (a command line flag's)."""
    import yaml

    if isinstance(item, tuple):
        key, value = item
    else:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. recipe.sfreq=250)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        if not isinstance(node.setdefault(part, {}), dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        node = node[part]
    node[leaf] = value


def _where(loc: tuple, data) -> str:
    """The part of a pydantic location that exists in the input (drops union member tags)."""
    parts, node = [], data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
        parts.append(str(part))
    return ".".join(parts)


_NESTED = re.compile(r"invalid [A-Z]\w*: ")  # StrictConfig.__init__'s, inside another config
_PLACE = re.compile(r"[A-Za-z_][\w.]*(?=: )")


def _nested_lines(head: str, msg: str) -> list[str]:
    """A nested config's problems under this place: ``recipe`` + ``invalid EEGRecipe:
    notch: ...`` -> ``recipe.notch: ...``."""
    lines = []
    for line in filter(None, map(str.strip, msg.splitlines())):
        line = _NESTED.sub("", line, count=1) if _NESTED.match(line) else line
        if head and _PLACE.match(line):
            lines.append(f"{head[:-2]}.{line}")
        else:
            lines.append(head + line)
    return lines


def _allowed(e: dict) -> list[str]:
    """The words a literal or a union's tag allows, from a pydantic error's context."""
    ctx = e.get("ctx") or {}
    return re.findall(r"'([^']*)'", str(ctx.get("expected", ctx.get("expected_tags", ""))))


def config_problems(err: ValidationError, data) -> list[str]:
    """One line per problem of a pydantic error: ``key.sub: message (got value)``.

    Alternatives of one value (a union's members) share a line, joined by "or"; a word
    that is not one of the allowed words gets the closest of them.
    """
    lines, alternatives = [], {}
    for e in err.errors(include_url=False):
        place = _where(e["loc"], data)
        head = f"{place}: " if place else ""
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if "\n" in msg or _NESTED.match(msg):  # a nested config's problems (StrictConfig)
            lines += _nested_lines(head, msg)
            continue
        if e["type"] == "union_tag_invalid":  # a discriminated union: its tag is unknown
            ctx = e["ctx"]
            msg = f"{ctx['discriminator'].strip('_()')} {ctx['tag']!r} is not one of {ctx['expected_tags']}"
            got = did_you_mean(ctx["tag"], _allowed(e))
        elif e["type"] in ("value_error", "missing"):
            got = ""
        else:
            word = e["input"]
            mean = did_you_mean(word, _allowed(e)) if isinstance(word, str) else ""
            got = f" (got {word!r:.60}{'; ' + mean[2:-1] if mean else ''})"
        alternatives.setdefault(head, [])
        if msg + got not in alternatives[head]:
            alternatives[head].append(msg + got)
    return lines + [head + " or ".join(msgs) for head, msgs in alternatives.items()]


def load_config(source, model: type[Model], overrides=(), *, name: str | None = None) -> Model:
    """Read and validate a config: a YAML path (OmegaConf syntax, ``${...}``) or a mapping.

    ``overrides`` are ``"key.sub=value"`` strings applied on top (values parsed as YAML),
    or ``(key, value)`` pairs (values as they are). Raises
    :class:`~neurofm.errors.ConfigError` with one line per problem, each starting with
    ``name`` (default: the path, or the model's name for a mapping).
    """
    is_path = isinstance(source, str | os.PathLike)
    name = name or (str(source) if is_path else model.__name__)
    data = _read_yaml(Path(source).expanduser()) if is_path else source
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{name} holds a {type(data).__name__} at the top level: a config is a mapping "
            f"of keys ({', '.join(list(model.model_fields)[:4])}, ...), one 'key: value' a line"
        )
    data = copy.deepcopy(dict(data))
    for item in [overrides] if isinstance(overrides, str) else overrides:
        _apply_override(data, item)
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{name}: key {bad[0]!r} is not a name: keys are words such as 'out'")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError("\n".join(f"{name}: {p}" for p in config_problems(err, data))) from None
