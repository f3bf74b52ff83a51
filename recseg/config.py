"""Typed configs: the one source of truth for command options, MLproject parameters and the
params logged to MLflow.

A config is a dataclass whose fields carry ``option(...)`` metadata. From it come the click
options of the ``recseg`` command, the click options of the MLproject entry point script, the
MLproject ``parameters`` block, and validation with one-line errors that name the flag.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import click

from recseg.errors import InputError

Check = Callable[[Any], str | None]
# What --model / --model-uri accept, in every help text and error that names them.
MODEL_URIS = "runs:/RID/model, models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID or a folder"


def option(
    help: str, *, check: Check | None = None, mltype: str | None = None, **click_kw: Any
) -> dict:
    """Field metadata: ``help`` text, a ``check`` returning an error message or None, the
    MLproject type (``string``, ``float``, ``path``, ``uri``) and extra click keywords."""
    return {"help": help, "check": check, "mltype": mltype, "click": click_kw}


def flag(name: str) -> str:
    """The command-line flag of a field: ``seq_len`` -> ``--seq-len``."""
    return "--" + name.replace("_", "-")


def fields(cls: type) -> list[tuple[dataclasses.Field, type]]:
    """The config's fields with their resolved Python types."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def click_options(cls: type, *, mlproject: bool = False) -> Callable:
    """Decorator adding one click option per field. Bools are ``--x/--no-x`` flags on the
    ``recseg`` command and ``--x true|false`` for MLproject scripts (which pass values)."""

    def decorate(func: Callable) -> Callable:
        for f, kind in reversed(fields(cls)):
            meta = f.metadata
            default = _default(f)
            kw: dict[str, Any] = {"help": meta["help"], "show_default": default not in (None, "")}
            kw.update(meta["click"])
            required = default is None and f.default is dataclasses.MISSING
            if kind is bool and not mlproject:
                decl = f"{flag(f.name)}/--no-{f.name.replace('_', '-')}"
                func = click.option(decl, f.name, default=default, **kw)(func)
                continue
            kw.setdefault("type", click.BOOL if kind is bool else kind)
            if required:
                kw["required"] = True
            else:
                kw["default"] = default
            func = click.option(flag(f.name), f.name, **kw)(func)
        return func

    return decorate


def build(cls: type, values: dict[str, Any]) -> Any:
    """Instantiate and validate a config from option values; ``InputError`` names the flag."""
    known = {f.name for f, _ in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown option(s): {', '.join(flag(u) for u in unknown)}")
    cfg = cls(**values)
    validate(cfg)
    return cfg


def validate(cfg: Any) -> None:
    """Run every field's check; the first failure raises ``InputError`` naming its flag."""
    for f, kind in fields(type(cfg)):
        value = getattr(cfg, f.name)
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InputError(f"{flag(f.name)}: expected a number, got {value!r}")
        check = f.metadata.get("check")
        message = check(value) if check else None
        if message:
            raise InputError(f"{flag(f.name)}: {message}")


def as_params(cfg: Any) -> dict[str, str]:
    """Every option, resolved, as MLflow params (strings)."""
    return {f.name: str(getattr(cfg, f.name)) for f, _ in fields(type(cfg))}


def mlproject_parameters(cls: type) -> dict[str, dict[str, Any]]:
    """The MLproject ``parameters`` block of an entry point, derived from the config."""
    types = {int: "float", float: "float", bool: "string", str: "string"}
    out: dict[str, dict[str, Any]] = {}
    for f, kind in fields(cls):
        entry: dict[str, Any] = {"type": f.metadata.get("mltype") or types[kind]}
        default = _default(f)
        if default is not None:
            entry["default"] = str(default).lower() if kind is bool else default
        out[f.name] = entry
    return out


def mlproject_command(script: str, cls: type) -> str:
    """The MLproject command line of an entry point: every field passed as ``--flag {name}``."""
    args = " ".join(f"{flag(f.name)} {{{f.name}}}" for f, _ in fields(cls))
    return f"python {script} {args}"


def at_least(low: float) -> Check:
    """A check: value >= low."""
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def one_of(*choices: Any) -> Check:
    """A check: value is one of ``choices``."""
    return lambda v: (
        None if v in choices else f"must be one of {', '.join(map(str, choices))}, got {v}"
    )


def parse_size(text: str) -> tuple[int, int]:
    """``"270x512"`` -> ``(270, 512)``; ``InputError`` for anything else."""
    parts = str(text).lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"expected HxW (e.g. 270x512), got '{text}'") from None
    if h < 16 or w < 16 or h > 8192 or w > 8192:
        raise InputError(f"height and width must be between 16 and 8192, got '{text}'")
    return h, w


def accepts(parse: Callable[[Any], object]) -> Check:
    """A check from a function that raises ``InputError`` for values it does not accept."""

    def check(value: Any) -> str | None:
        try:
            parse(value)
        except InputError as exc:
            return str(exc)
        return None

    return check


size_check = accepts(parse_size)


def size_or_default(value: str) -> str | None:
    """A check for a ``--size`` whose empty value means "the default size": "" or HxW."""
    return None if value == "" else size_check(value)


DEVICES = ("auto", "cpu", "cuda")


def device_field(*, purpose: str = "") -> Any:
    """``--device``, shared by every command that computes (train, lr-find, evaluate, segment):
    a new dataclass field; ``purpose`` leads its help text ("Where to train")."""
    text = "auto (CUDA when available), cpu or cuda."
    return dataclasses.field(
        default="auto",
        metadata=option(f"{purpose}: {text}" if purpose else text, check=one_of(*DEVICES)),
    )
