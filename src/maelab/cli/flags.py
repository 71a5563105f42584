"""Command-line flags generated from option dataclasses: one flag per field made with ``config.opt``.

Each flag is ``--field-name`` (or the field's ``flag``), its help is the field's help plus
``(default: X)``, and its default is SUPPRESSED, so the parsed namespace holds only the flags the
user gave (under ``dest_prefix.field``). :func:`options_from_args` builds the dataclass from its
defaults and those values through ``config.update_section`` (strict types). Fields made without
``opt`` (no help) are not flags: the command fills them in (e.g. the positional RUN).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args

from maelab.config import SECTIONS, ConfigError, field_types, update_section

T = TypeVar("T")

# Shown after the default of these model fields: the --model preset sets them unless given.
PRESET_FIELDS = ("embed_dim", "encoder_depth", "encoder_heads", "decoder_embed_dim", "decoder_depth",
                 "decoder_heads", "mlp_ratio")  # fmt: skip


def flag_name(f: dataclasses.Field) -> str:
    """The flag of a dataclass field: ``--`` + its ``flag`` metadata or its name, ``_`` -> ``-``."""
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else repr(value) if value == "" else str(value)


def _help(f: dataclasses.Field, suffix: str = "") -> str:
    """The field's help with its default, unless the help already says what the default is."""
    text = f.metadata["help"]
    return text if "(default:" in text else f"{text} (default: {_shown(_default(f))}{suffix})"


def _argparse_kwargs(typ: Any, cli: Mapping[str, Any]) -> dict[str, Any]:
    """type / nargs / action / metavar of a flag of type ``typ`` (bool, int, float, str, tuple[X, ...], X | None)."""
    args = [a for a in get_args(typ) if a is not type(None) and a is not Ellipsis]
    if typ is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typ in (int, float, str):
        return {"type": typ, "metavar": typ.__name__.upper()}
    if getattr(typ, "__origin__", None) is tuple:
        item = args[0] if args else float
        if cli.get("action") == "append":  # repeat the flag: --flag A --flag B
            return {"type": item, "metavar": item.__name__.upper()}
        return {"type": item, "nargs": "+", "metavar": "X" if item is float else item.__name__.upper()}
    return _argparse_kwargs(args[0], cli)  # X | None: None is the default, meaning "not set"


def add_dataclass_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    dest_prefix: str,
    default_suffix: Mapping[str, str] | None = None,
) -> None:
    """Add one flag per ``opt`` field of dataclass ``cls`` to ``parser`` (a parser or an argument group).

    The value lands in ``args.<dest_prefix>.<field>`` only when the flag is given. A field whose type
    is itself a dataclass gets its flags in its own group (titled by the field's help) under
    ``<dest_prefix>.<field>``. ``default_suffix`` adds text after a field's shown default.
    """
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        typ = types[f.name]
        if dataclasses.is_dataclass(typ):
            group = parser.add_argument_group(f.metadata["help"]) if hasattr(parser, "add_argument_group") else parser
            add_dataclass_flags(group, typ, f"{dest_prefix}.{f.name}", default_suffix)
            continue
        cli = dict(f.metadata.get("cli") or {})
        kwargs = _argparse_kwargs(typ, cli) | cli
        if "choices" in cli and "metavar" not in cli:
            kwargs.pop("metavar", None)  # argparse shows {a,b,c}
        kwargs.update(dest=f"{dest_prefix}.{f.name}", default=argparse.SUPPRESS)
        kwargs["help"] = _help(f, (default_suffix or {}).get(f.name, ""))
        parser.add_argument(flag_name(f), **kwargs)


def given_values(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """{field: value} of the flags under ``prefix`` that the user gave (lists as tuples; not nested ones)."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        head, dot, name = key.rpartition(".")
        if dot and head == prefix:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def options_from_args(cls: type[T], args: argparse.Namespace, prefix: str, **fixed: Any) -> T:
    """``cls`` built from its defaults, then ``fixed`` (values the command sets, e.g. the positional
    RUN), then the flags given under ``prefix``; nested dataclass fields are built the same way."""
    obj = cls(**fixed)
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(types[f.name]) and "help" in f.metadata:
            setattr(obj, f.name, options_from_args(types[f.name], args, f"{prefix}.{f.name}"))
    given = given_values(args, prefix)
    try:
        update_section(obj, given, "command line")
    except ConfigError as e:  # name the flag, not the field
        flags = {f.name: flag_name(f) for f in dataclasses.fields(cls)}
        raise ConfigError(next((f"{flags[k]}: {e}" for k in given if f".{k}:" in str(e)), str(e))) from e
    return obj


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int],
    options: type | None,
    help_text: str,
    description: str,
    positional: tuple[str, str, str] | None = None,
    optional: bool = False,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` running ``func``, with the flags of dataclass ``options`` (dest ``opts.*``)
    after its ``positional`` argument (dest, metavar, help; ``optional``: may be left out, then "")."""
    p = sub.add_parser(name, help=help_text, description=description)
    if positional is not None:
        dest, metavar, text = positional
        p.add_argument(dest, metavar=metavar, help=text, **({"nargs": "?", "default": ""} if optional else {}))
    if options is not None:
        add_dataclass_flags(p, options, "opts")
    p.set_defaults(func=func)
    return p


# ------------------------------------------------------------------------------------ pretraining sections
def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The pretraining flags: one group per config section (model, data, train, dino), dest ``section.field``."""
    for section, cls in SECTIONS.items():
        suffix = {name: " for ref" for name in PRESET_FIELDS} if section == "model" else None
        add_dataclass_flags(parser.add_argument_group(f"{section} options"), cls, section, suffix)


def add_config_file_flag(parser: argparse.ArgumentParser, sections: str = "[model], [data], [train], [dino]") -> None:
    """``--config FILE``: a TOML file of pretraining config ``sections``, below the flags given."""
    parser.add_argument(
        "--config", default="", metavar="FILE", help=f"TOML file with {sections} tables (default: none)"
    )


def cli_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{section: {field: value}} for the pretraining flags the user actually gave."""
    return {section: given_values(args, section) for section in SECTIONS}
