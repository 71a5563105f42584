"""Config machinery shared by every option dataclass: fields with help texts, strict coercion of
values from files and flags, TOML loading, and readable differences between stored settings."""

from __future__ import annotations

import difflib
import sys
from dataclasses import field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def opt(default: Any, help: str, flag: str | None = None, **cli: Any) -> Any:
    """A dataclass field with a help text (and optionally a CLI flag name other than the field's).

    ``cli`` holds extra argparse settings of the field's flag (``choices``, ``metavar``,
    ``action="append"``); fields made without ``opt`` get no flag.
    """
    meta = {"help": help, "flag": flag, "cli": cli}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a config dataclass."""
    return get_type_hints(cls)


def check(checks: list[tuple[bool, str]]) -> None:
    """Raise a :class:`ConfigError` with the message of the first failed ``(ok, message)`` pair."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def merge_sections(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` layers merged field by field, later layers winning (copies; inputs unchanged)."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    """The error for ``key`` not in ``known`` (at ``where``), with the closest known key as a hint."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}")


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check/convert a value from a file to the field's type; the error names ``where``."""
    args = [a for a in get_args(typ) if a is not type(None)]
    if get_origin(typ) in (Union, UnionType):  # X | None: None means "not set" (e.g. the run's own value)
        return None if value is None else _coerce(value, args[0], where)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    # tuple[X, ...]: a list of X (numbers unless the element type says otherwise)
    item = args[0] if args else float
    if not isinstance(value, (list, tuple)):
        kind = "numbers" if item in (int, float) else f"{item.__name__} values"
        raise ConfigError(f"{where}: expected a list of {kind}, got {value!r}")
    return tuple(_coerce(v, item, where) for v in value)


def update_section(section: Any, values: dict[str, Any], where: str) -> None:
    """Set ``values`` on a config section, rejecting unknown keys and wrong types."""
    types = field_types(type(section))
    for key, value in values.items():
        if key not in types:
            raise unknown_key(key, list(types), where)
        setattr(section, key, _coerce(value, types[key], f"{where}.{key}"))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from e


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Each leaf that differs between two nested dicts, as 'a.b: OLD before, NEW now'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += config_differences(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if old == new else [f"{prefix}: {old!r} before, {new!r} now"]
