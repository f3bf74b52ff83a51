"""Command options from environment variables, as ``qsub -v NAME=value`` passes them.

Every option of a command has a variable: its name in upper case (``--batch-size`` ->
``BATCH_SIZE``). ``qsub -v`` splits its list at commas, so a value that holds one is written
with ``%2C`` instead (``WEIGHT_DECAYS=0%2C1e-4``); an empty value means the option's default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import click

from recseg.errors import InputError

COMMA = "%2C"
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def variable(param: click.Parameter) -> str:
    """The environment variable of an option: ``batch_size`` -> ``BATCH_SIZE``."""
    return str(param.name).upper()


def encode(value: str) -> str:
    """A value ``qsub -v`` keeps whole (commas written as ``%2C``)."""
    return str(value).replace(",", COMMA)


def decode(value: str) -> str:
    return re.sub(re.escape(COMMA), ",", value, flags=re.IGNORECASE)


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name]


def args_from_env(command: click.Command, environ: Mapping[str, str]) -> list[str]:
    """The command-line arguments the variables in ``environ`` stand for."""
    args: list[str] = []
    for opt in options(command):
        name = variable(opt)
        raw = environ.get(name, "")
        if raw == "":
            continue
        args += option_args(opt, decode(raw), name)
    return args


def option_args(opt: click.Option, value: str, label: str) -> list[str]:
    """The arguments that give ``opt`` the text ``value``: ``--x VALUE``, or for a flag pair
    ``--x``/``--no-x`` from true/false; ``label`` names the option in an error."""
    if not (opt.is_bool_flag and opt.secondary_opts):
        return [opt.opts[0], value]
    if value.lower() not in (*TRUE, *FALSE):
        raise InputError(f"{label}: expected true or false, got '{value}'")
    return [opt.opts[0] if value.lower() in TRUE else opt.secondary_opts[0]]


def env_from_values(command: click.Command, values: Mapping[str, object]) -> dict[str, str]:
    """The variables (encoded for ``qsub -v``) that give ``values`` to ``command``; options
    left at their defaults are left out."""
    out: dict[str, str] = {}
    for opt in options(command):
        if opt.name not in values:
            continue
        value = values[opt.name]
        if value is None or value == opt.default:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out[variable(opt)] = encode(text)
    return out


def in_variables(command: click.Command, message: str) -> str:
    """``message`` with each option's flag (``--batch-size``) written as its variable."""
    for opt in options(command):
        for decl in (*opt.opts, *opt.secondary_opts):
            message = re.sub(rf"(?<![\w-]){re.escape(decl)}(?![\w-])", variable(opt), message)
    return message
