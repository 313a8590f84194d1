"""The options of ``headstart train`` and ``headstart lr-find``, built from
:class:`~headstart.config.TrainConfig`'s fields: one declaration per setting (flag, help text,
default and ``--help`` group all live on the field, see :class:`~headstart.config.Cli`).

:func:`with_config_options` gives a command one typer option per field (through a generated
``__signature__``, which typer reads like a hand-written one); :class:`GroupedCommand` prints
``--help`` with the options under their group headings while keeping the plain-text help
(``rich_markup_mode=None``, so "[default: ...]" stays visible); :func:`given_options` picks the
options typed on the command line, which override a ``--config`` file.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from typer.core import TyperCommand

from headstart.config import Cli, CliGroup, TrainConfig
from headstart.errors import HeadstartError

#: ``--help`` heading of each group, in the order shown
GROUP_TITLES: dict[CliGroup, str] = {
    "data": "Data",
    "model": "Model",
    "strategy": "Strategy",
    "optimisation": "Optimisation",
    "augmentation": "Augmentation",
    "output": "Output and reproducibility",
    "scale-out": "Scale-out",
}
#: heading of the options that belong to no group (--config, --resume, --help, ...)
OTHER_OPTIONS = "Options"

F = TypeVar("F", bound=Callable[..., Any])


def cli_metadata(field: FieldInfo) -> Cli | None:
    """The :class:`Cli` metadata of a TrainConfig field (None if it has none)."""
    return next((m for m in field.metadata if isinstance(m, Cli)), None)


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def option_type(annotation: Any) -> tuple[Any, str | None]:
    """The typer value type of a field's option and its metavar: Literal fields show their
    choices (``[linear|mlp|...]``) and stay text, validated by TrainConfig like a YAML value."""
    members = [
        a for a in (get_args(annotation) if _is_union(annotation) else (annotation,))
        if a is not type(None)
    ]  # fmt: skip
    if len(members) == 1:
        (only,) = members
        if get_origin(only) is Literal:
            return str, "[" + "|".join(str(v) for v in get_args(only)) + "]"
        if get_origin(only) is list:  # repeatable; TrainConfig parses the items (a,b,...)
            return list[str], None
        if only in (bool, int, float, str):
            return only, None
    # a union such as int | Literal["auto"]: passed on as text, TrainConfig parses it
    shown: list[str] = []
    for a in members:
        shown += [str(v) for v in get_args(a)] if get_origin(a) is Literal else [f"<{a.__name__}>"]
    return str, "[" + "|".join(shown) + "]"


def field_parameters() -> list[inspect.Parameter]:
    """One keyword-only parameter per TrainConfig field, annotated with its typer Option (or
    Argument, for a required field: the data, which ``--config`` may also give)."""
    params = []
    for name, field in TrainConfig.model_fields.items():
        cli = cli_metadata(field)
        value_type, metavar = option_type(field.annotation)
        info: Any
        if field.is_required():
            default = None
            info = typer.Argument(help=field.description, show_default=False)
        else:
            default = field.get_default(call_default_factory=True)
            info = typer.Option(
                *(cli or Cli("data")).declarations(name, value_type is bool),
                help=field.description,
                metavar=(cli.metavar if cli and cli.metavar else metavar),
                rich_help_panel=GROUP_TITLES[cli.group] if cli else None,
            )
        annotation = value_type | None if default is None else value_type
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default,
                annotation=Annotated[annotation, info],
            )
        )  # fmt: skip
    return params


def with_config_options(command: F) -> F:
    """Give ``command`` (which takes ``**options``) the TrainConfig field options.

    The signature typer sees: the field arguments (data), one option per field, then
    ``command``'s own parameters (--config, ...); ``options`` receives the field values.
    """
    own = inspect.signature(command, eval_str=True)
    mine = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in own.parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    clash = {p.name for p in mine} & set(TrainConfig.model_fields)
    if clash:
        raise TypeError(f"{command.__name__}: parameters {clash} are TrainConfig fields")
    fields = field_parameters()
    arguments = [p for p in fields if TrainConfig.model_fields[p.name].is_required()]
    options = [p for p in fields if p not in arguments]
    command.__signature__ = own.replace(parameters=[*arguments, *options, *mine])  # type: ignore[attr-defined]
    return command


def given_options(ctx: typer.Context, options: dict[str, Any]) -> dict[str, Any]:
    """The field options given on the command line (not left at their defaults): only these
    override a ``--config`` file or are checked against a resumed run."""
    # (typer >= 0.2x vendors its own click: its ParameterSource enum is compared by name)
    sources = {k: ctx.get_parameter_source(k) for k in options}
    return {k: v for k, v in options.items() if getattr(sources[k], "name", "DEFAULT") != "DEFAULT"}


def config_from(config_file: Any, given: dict[str, Any], *, missing_data: str) -> TrainConfig:
    """The TrainConfig of a command: ``config_file`` (YAML) with ``given`` overriding it, or
    ``given`` alone (then the data is needed: ``missing_data`` is the error otherwise)."""
    if config_file is not None:
        return TrainConfig.from_yaml(config_file, **given)
    if "data" not in given:
        raise HeadstartError(missing_data)
    return TrainConfig.create(**given)


class GroupedCommand(TyperCommand):
    """Plain-text ``--help`` (no rich markup, which would eat "[...]" in help texts) with the
    options under their group headings (their ``rich_help_panel``), in :data:`GROUP_TITLES`
    order after the ungrouped ones."""

    def format_options(self, ctx: Any, formatter: Any) -> None:  # typer's (vendored) click types
        arguments: list[tuple[str, str]] = []
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
            else:
                title = getattr(param, "rich_help_panel", None) or OTHER_OPTIONS
                sections.setdefault(title, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        order = [OTHER_OPTIONS, *GROUP_TITLES.values()]
        for title in sorted(sections, key=lambda t: order.index(t) if t in order else len(order)):
            with formatter.section(title):
                formatter.write_dl(sections[title])
