"""``headstart train`` / ``lr-find`` options and TrainConfig are one declaration: every field has
its option with the field's default and description as help, in one of the ``--help`` groups,
under the flag names users' scripts already use; a flag on the command line sets its field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import headstart
from headstart import cli
from headstart.cli import app
from headstart.cli_options import GROUP_TITLES, cli_metadata
from headstart.config import TrainConfig

# the groups asked for in issue 15, in --help order
GROUPS = ("data", "model", "strategy", "optimisation", "augmentation", "output", "scale-out")

# every flag `headstart train` took before the options were generated (scripts depend on them)
TRAIN_FLAGS = """
--accelerator --adapt --adapt-baseline --adapt-weight --augment --backbone-lr-mult --batch-size
--bn --cache --class-weights --compile --config --cutmix --deterministic --devices --epochs
--fast-path --feature-views --few-shot-head --few-shot-refine --gamma --gradual-steps --head
--head-dropout --head-hidden --head-init --image-size --label-column --label-embeddings
--label-smoothing --layer-decay --lora-alpha --lora-dropout --lora-r --lr --lr-head --max-length
--mixup --model --momentum --no-adapt-baseline --no-cache --no-compile --no-deterministic
--no-early-stopping --no-fast-path --no-few-shot-refine --num-nodes --num-workers --optimizer
--out --patience --pooling --precision --prompt --resume --sampler --scheduler --seed --skip-bad
--step-size --strategy --strategy-dist --strict --target-eval --target-unlabeled --test
--text-column --unfreeze-every --unfreeze-last --val --val-fraction --warmup-epochs
--weight-decay --weights -b -e -m -o -s
""".split()  # noqa: SIM905
LR_FIND_FLAGS = """
--batch-size --config --image-size --max-lr --min-lr --model --optimizer --plot --steps
--strategy --weights -b -m -s
""".split()  # noqa: SIM905

COMMANDS = ("train", "lr-find")


def _command(name: str) -> Any:  # a click command (typer's vendored click)
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def _params(name: str) -> dict[str, Any]:
    return {p.name: p for p in _command(name).params if p.name}


def _flags(name: str) -> set[str]:
    return {o for p in _command(name).params for o in [*p.opts, *p.secondary_opts]}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_field_has_its_option_with_the_fields_default_help_and_group(command: str) -> None:
    params = _params(command)
    titles = {GROUP_TITLES[g] for g in GROUPS}
    assert set(GROUP_TITLES) == set(GROUPS)
    for name, field in TrainConfig.model_fields.items():
        assert name in params, f"TrainConfig.{name} has no `headstart {command}` option"
        param = params[name]
        assert param.help == field.description, name
        if field.is_required():  # the data: a positional argument (or from --config)
            assert param.param_type_name == "argument" and param.default is None, name
            continue
        assert param.param_type_name == "option", name
        default = param.default
        expected = field.get_default(call_default_factory=True)
        assert (list(default) if isinstance(default, tuple) else default) == expected, name
        meta = cli_metadata(field)
        assert meta is not None and meta.group in GROUPS, f"{name}: no --help group"
        panel = getattr(param, "rich_help_panel", None)
        assert panel == GROUP_TITLES[meta.group] and panel in titles, name


@pytest.mark.parametrize(("command", "flags"), [("train", TRAIN_FLAGS), ("lr-find", LR_FIND_FLAGS)])
def test_existing_flag_names_are_kept(command: str, flags: list[str]) -> None:
    missing = set(flags) - _flags(command)
    assert not missing, f"`headstart {command}` lost {sorted(missing)}"


def _help(command: str) -> str:
    r = CliRunner().invoke(app, [command, "--help"], color=False)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_the_groups_the_defaults_and_each_fields_text(command: str) -> None:
    text = _help(command)
    assert "\x1b[" not in text  # plain text, also when piped
    headings = [f"\n{GROUP_TITLES[g]}:\n" for g in GROUPS]
    at = [text.find(h) for h in headings]
    assert -1 not in at and at == sorted(at), at
    # "[...]" survives (rich markup would eat it): defaults, and help texts with brackets
    for shown in ("[default: 0.2]", "[default: skip-bad]", "[default: torchvision:mobilenet_v2]"):
        assert shown in text
    assert "--head [linear|mlp|cosine|semantic]" in text  # choices as values, not <str>
    assert "--logger [csv|tensorboard|mlflow|wandb]" in text and "list[" not in text
    squeezed = "".join(text.split())  # wrapped lines: compare without whitespace
    for name, field in TrainConfig.model_fields.items():
        assert "".join((field.description or "").split()) in squeezed, name


class _Stop(Exception):
    """Raised where the command would start training."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """The TrainConfigs the CLI commands build (each command stops there instead of running)."""
    configs: list[TrainConfig] = []
    real = cli.config_from

    def record(*args: Any, **kwargs: Any) -> TrainConfig:
        configs.append(real(*args, **kwargs))
        raise _Stop

    monkeypatch.setattr(cli, "config_from", record)
    return configs


def _invoke(*args: str) -> None:
    r = CliRunner().invoke(app, list(args))
    assert isinstance(r.exception, _Stop), (r.output, r.exception)


FLAG_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["--strict"], {"strict": True}),  # bool
    (["--no-fast-path"], {"cache_features": False}),  # bool named unlike its field
    (["--no-cache"], {"disk_cache": False}),
    (["--head", "mlp"], {"head": "mlp"}),  # Literal choice
    (["-s", "fine-tune"], {"strategy": "fine-tune"}),  # short alias
    (["--lr-head", "0.01"], {"lr": 0.01}),  # float, second name
    (["--num-workers", "3"], {"num_workers": 3}),  # optional int
    (["--patience", "2"], {"early_stopping_patience": 2}),
    (["--no-early-stopping"], {"early_stopping_patience": None}),  # CLI-only switch
    (["--image-size", "64"], {"image_size": 64}),  # int | "auto"
    (["--image-size", "auto"], {"image_size": "auto"}),
    (["--prompt", "a {}.", "--prompt", "b {}."], {"prompts": ["a {}.", "b {}."]}),  # list
]


@pytest.mark.parametrize(
    ("command", "flags", "expected"),
    [
        (command, flags, expected)
        for command in COMMANDS
        for flags, expected in FLAG_CASES
        if not (command == "lr-find" and flags == ["--no-early-stopping"])  # train's own switch
    ],
)
def test_a_flag_sets_its_field_and_nothing_else(
    built: list[TrainConfig], command: str, flags: list[str], expected: dict[str, Any]
) -> None:
    _invoke(command, "data/", *flags)
    assert built == [TrainConfig.create(data="data/", **expected)]


def test_config_file_values_survive_unless_an_option_overrides_them(
    built: list[TrainConfig], tmp_path: Path
) -> None:
    path = tmp_path / "run.yaml"
    TrainConfig.create(data="d", epochs=3, lr=0.1, strict=True, head="mlp").save_yaml(path)
    _invoke("train", "--config", str(path), "--epochs", "5", "--no-cache")
    assert built == [TrainConfig.create(data="d", epochs=5, lr=0.1, strict=True, head="mlp",
                                        disk_cache=False)]  # fmt: skip


def test_resume_passes_only_the_given_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(headstart, "train", lambda *a, **k: calls.append((a, k)), raising=False)
    r = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), "--epochs", "4"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert calls == [((), {"resume": tmp_path, "epochs": 4})]
