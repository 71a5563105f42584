"""Config resolution (defaults < preset < file < flags), strict keys, and the command line."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from maelab.cli import build_parser, main
from maelab.cli.flags import add_dataclass_flags, given_values, options_from_args
from maelab.config import (
    ConfigError,
    FinetuneConfig,
    FinetuneOptions,
    KnnOptions,
    LinearOptions,
    ProbeConfig,
    ReconstructOptions,
    TrainConfig,
    load_toml,
    opt,
    resolve_config,
)


def test_preset_file_and_flags_precedence(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nname = "vit-tiny"\nmask_ratio = 0.5\n[train]\nepochs = 7\nbatch_size = 64\n')
    cfg = resolve_config(load_toml(toml), {"train": {"epochs": 3}}, str(toml))
    assert (cfg.model.embed_dim, cfg.model.encoder_depth, cfg.model.encoder_heads) == (192, 12, 3)
    assert cfg.model.mask_ratio == 0.5 and cfg.train.epochs == 3 and cfg.train.batch_size == 64
    explicit = resolve_config(None, {"model": {"name": "vit-tiny", "embed_dim": 96}}, "flags")
    assert explicit.model.embed_dim == 96 and explicit.model.encoder_depth == 12


def test_short_recipe_sets_its_values_and_flags_win(tmp_path: Path) -> None:
    paper = resolve_config(None, {}, "flags")
    assert (paper.train.recipe, paper.train.batch_size, paper.train.lr, paper.model.norm_pix_loss) == (
        "paper", 256, 0.0, False)  # fmt: skip
    short = resolve_config(None, {"train": {"recipe": "short"}}, "flags")
    assert (short.train.batch_size, short.train.lr, short.train.warmup_epochs) == (64, 1e-3, 1.0)
    assert short.model.norm_pix_loss and short.train.recipe == "short"
    given = resolve_config(None, {"train": {"recipe": "short", "batch_size": 128}}, "flags")
    assert (given.train.batch_size, given.train.lr) == (128, 1e-3)  # a flag beside the recipe wins
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nrecipe = "short"\n[model]\nnorm_pix_loss = false\n')
    from_file = resolve_config(load_toml(toml), {}, str(toml))
    assert from_file.train.batch_size == 64 and not from_file.model.norm_pix_loss  # the file wins over the recipe
    with pytest.raises(ConfigError, match="--recipe 'fast'"):
        resolve_config(None, {"train": {"recipe": "fast"}}, "flags")
    with pytest.raises(ConfigError, match="MAE recipe"):
        resolve_config(None, {"train": {"recipe": "short", "method": "dino"}}, "flags")


def test_unknown_keys_name_file_and_key(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nepocs = 3\n")
    with pytest.raises(ConfigError, match=r"c.toml \[train\]: unknown key 'epocs' \(did you mean 'epochs'\?\)"):
        resolve_config(load_toml(toml), {}, str(toml))
    toml.write_text("[trainer]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trainer'"):
        resolve_config(load_toml(toml), {}, str(toml))
    toml.write_text("[train]\nepochs = 'many'\n")
    with pytest.raises(ConfigError, match="train.*epochs: expected an integer"):
        resolve_config(load_toml(toml), {}, str(toml))


@pytest.mark.parametrize(
    "values,match",
    [
        ({"model": {"patch_size": 5}}, "--img-size 32 must be a positive multiple of --patch-size 5"),
        ({"model": {"mask_ratio": 1.0}}, "--mask-ratio must be in"),
        ({"model": {"mask_ratio": 0.999}}, "leaves no visible patch"),
        ({"train": {"epochs": 0}}, "--epochs must be > 0"),
        ({"train": {"batch_size": -1}}, "--batch-size must be > 0"),
        ({"model": {"name": "vit-huge"}}, "unknown model preset"),
    ],
)
def test_invalid_values(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_config(None, values, "flags")


def test_help_lists_every_option_with_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    text = capsys.readouterr().out
    for flag in ("--data-dir", "--dataset", "--subset", "--model", "--patch-size", "--mask-ratio", "--norm-pix-loss",
                 "--epochs", "--batch-size", "--accum-steps", "--lr", "--warmup-epochs", "--device", "--precision",
                 "--seed", "--out", "--resume", "--config", "--quiet"):  # fmt: skip
        assert flag in text
    assert text.count("(default:") >= 40


def test_cli_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--data-dir", str(tmp_path / "missing"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "maelab pretrain: error: --data-dir" in err and "no such directory" in err
    assert main(["pretrain", "--resume", str(tmp_path), "--mask-ratio", "0.5"]) == 2
    assert "only --epochs" in capsys.readouterr().err


def test_batch_larger_than_data(tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["pretrain", "--data-dir", str(image_folder), "--img-size", "8", "--patch-size", "4",
               "--batch-size", "64", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"])  # fmt: skip
    assert rc == 2
    assert "--batch-size 64" in capsys.readouterr().err
    rc = main(["pretrain", "--data-dir", str(image_folder), "--img-size", "8", "--patch-size", "4",
               "--batch-size", "4", "--accum-steps", "10", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"])  # fmt: skip
    assert rc == 2
    assert (
        "--accum-steps 10 = 40 images per optimizer step, but the training set has only 12" in capsys.readouterr().err
    )


def test_pretrain_and_resume_from_cli(tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    args = ["pretrain", "--data-dir", str(image_folder), "--img-size", "8", "--patch-size", "2", "--embed-dim", "16",
            "--encoder-depth", "1", "--encoder-heads", "2", "--decoder-embed-dim", "8", "--decoder-depth", "1",
            "--decoder-heads", "2", "--batch-size", "4", "--epochs", "1", "--out", str(run), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert main(args) == 2  # the run exists: resume it instead of overwriting
    assert "--resume" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000006"


# ------------------------------------------------------------------------------------ generated flags
def _subparsers(parser: argparse.ArgumentParser, name: str = "maelab") -> list[tuple[str, argparse.ArgumentParser]]:
    """(command name, parser) of every command and subcommand below ``parser``."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                out += [(f"{name} {sub_name}", sub), *_subparsers(sub, f"{name} {sub_name}")]
    return out


def test_every_flag_of_every_command_shows_its_default() -> None:
    commands = _subparsers(build_parser())
    names = {name for name, _ in commands}
    assert {"maelab pretrain", "maelab eval knn", "maelab eval linear", "maelab eval finetune", "maelab reconstruct",
            "maelab bench", "maelab export", "maelab report", "maelab sweep", "maelab compare"} <= names  # fmt: skip
    for name, parser in commands:
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # `maelab eval` only dispatches
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help and "(default:" in action.help, f"{name} {action.option_strings[0]}: {action.help!r}"
            assert action.option_strings[0] in text


def test_shared_flags_are_declared_once() -> None:
    """--data-dir / --device / --precision of the commands other than pretraining come from one field
    helper each (config.evaluation): the same help everywhere."""
    helps: dict[str, set[str]] = {}
    for name, parser in _subparsers(build_parser()):
        if name.split()[1] in ("pretrain", "sweep", "compare"):
            continue  # pretraining's own --data-dir / --device / --precision (config.pretrain)
        for action in parser._actions:
            for flag in set(action.option_strings) & {"--data-dir", "--device", "--precision"}:
                helps.setdefault(flag, set()).add(action.help or "")
    assert sorted(helps) == ["--data-dir", "--device", "--precision"]
    assert all(len(texts) == 1 for texts in helps.values()), helps


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["eval", "knn", "RUN", "--k", "0"], "--k"),
        (["eval", "knn", "RUN", "--temperature", "0"], "--temperature"),
        (["eval", "knn", "RUN", "--batch-size", "0"], "--batch-size"),
        (["eval", "knn", "RUN", "--backbone-arg", "novalue"], "--backbone-arg"),
        (["eval", "knn", "--backbone", "timm:vit_tiny_patch16_224"], "--backbone"),
        (["eval", "knn", "RUN", "--weights", "w.pth"], "--weights"),
        (["eval", "linear", "RUN", "--lrs", "0.1", "-1"], "--lrs"),
        (["eval", "linear", "RUN", "--val-fraction", "1.5"], "--val-fraction"),
        (["eval", "linear", "RUN", "--probe-batch-size", "0"], "--probe-batch-size"),
        (["eval", "finetune", "RUN", "--layer-decay", "2"], "--layer-decay"),
        (["eval", "finetune", "RUN", "--epochs", "0"], "--epochs"),
        (["reconstruct", "RUN", "--n", "0"], "--n"),
        (["reconstruct", "RUN", "--mask-ratio", "1"], "--mask-ratio"),
        (["bench", "--mask-ratio", "0.5", "1.0"], "--mask-ratio"),
        (["bench", "--model", "vit-huge"], "--model"),
        (["bench", "--rounds", "0"], "--rounds"),
    ],
)
def test_a_bad_value_names_its_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2  # rejected before any run, data or model is loaded
    err = capsys.readouterr().err
    assert err.startswith(f"maelab {argv[0]}: error: ") and flag in err, err


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["eval", "knn", "RUN", "--k", "ten"], "--k"),
        (["eval", "linear", "RUN", "--epochs", "1.5"], "--epochs"),
        (["eval", "knn", "RUN", "--pooling", "max"], "--pooling"),
        (["reconstruct", "RUN", "--precision", "fp16"], "--precision"),
        (["bench", "--attention", "flash"], "--attention"),
        (["export", "RUN", "--format", "onnx"], "--format"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_options_hold_defaults_and_only_the_flags_given() -> None:
    parser = build_parser()
    args = parser.parse_args(["eval", "linear", "RUN", "--epochs", "3", "--lrs", "0.1", "1", "--no-baseline",
                              "--backbone-arg", "a=1", "--backbone-arg", "b=x"])  # fmt: skip
    assert given_values(args, "opts") == {"baseline": False, "backbone_arg": ("a=1", "b=x")}
    opts = options_from_args(LinearOptions, args, "opts", run=args.run)
    assert opts.run == "RUN" and opts.baseline is False and opts.cache is True and opts.pooling == ("cls",)
    assert opts.probe == ProbeConfig(lrs=(0.1, 1.0), epochs=3)
    assert opts.backbone_kwargs() == {"a": 1, "b": "x"}
    knn = options_from_args(KnnOptions, parser.parse_args(["eval", "knn", "R", "--k", "3", "7"]), "opts")
    assert knn.k == (3, 7) and knn.temperature == 0.07 and knn.precision == "auto"
    recon = options_from_args(ReconstructOptions, parser.parse_args(["reconstruct", "R"]), "opts", run="R")
    assert recon.mask_ratio is None and recon.n == 8 and recon.num_eval == 2000
    recon = options_from_args(
        ReconstructOptions, parser.parse_args(["reconstruct", "R", "--mask-ratio", "0.5"]), "opts"
    )
    assert recon.mask_ratio == 0.5
    ft = options_from_args(FinetuneOptions, parser.parse_args(["eval", "finetune", "R", "--blr", "0.01"]), "opts")
    assert ft.recipe == FinetuneConfig(blr=0.01) and ft.baseline and not ft.from_scratch


def test_generated_flags_of_any_dataclass() -> None:
    @dataclasses.dataclass
    class Tiny:
        name: str = ""  # no opt(): not a flag
        count: int = opt(2, "how many")
        ratio: float | None = opt(None, "a ratio (default: automatic)")
        sizes: tuple[int, ...] = opt((1, 2), "sizes")
        fast: bool = opt(True, "go fast")

    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Tiny, "t")
    text = parser.format_help()
    assert "--name" not in text and "how many (default: 2)" in text and "(default: automatic)" in text
    assert "sizes (default: 1 2)" in text and "--no-fast" in text and "go fast (default: on)" in text
    built = options_from_args(Tiny, parser.parse_args(["--ratio", "0.5", "--sizes", "4", "--no-fast"]), "t", name="n")
    assert built == Tiny(name="n", count=2, ratio=0.5, sizes=(4,), fast=False)
    with pytest.raises(ConfigError, match="--sizes"):  # values are coerced strictly, the error names the flag
        options_from_args(Tiny, argparse.Namespace(**{"t.sizes": ["x"]}), "t")


def test_train_config_batch_lr_and_warmup_rules() -> None:
    """One place for the rules every run, summary and plan uses: images per step, the scaled lr, the capped warm-up."""
    t = TrainConfig(batch_size=64, accum_steps=2, blr=1e-3, warmup_epochs=5.0)
    assert t.images_per_step() == 128 and t.images_per_step(world_size=2) == 256
    assert t.peak_lr(world_size=2) == pytest.approx(1e-3)  # blr x 256 / 256
    assert TrainConfig(lr=5e-4, blr=1e-3).peak_lr() == 5e-4  # --lr wins over --blr
    assert t.warmup_steps(steps_per_epoch=10, total_steps=1000) == 50
    assert t.warmup_steps(steps_per_epoch=10, total_steps=20) == 5  # a quarter of a 2-epoch run
