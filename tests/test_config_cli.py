"""Config resolution (defaults < preset < file < flags), strict keys, and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from maelab.cli import build_parser, main
from maelab.config import ConfigError, load_toml, resolve_config


def test_preset_file_and_flags_precedence(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nname = "vit-tiny"\nmask_ratio = 0.5\n[train]\nepochs = 7\nbatch_size = 64\n')
    cfg = resolve_config(load_toml(toml), {"train": {"epochs": 3}}, str(toml))
    assert (cfg.model.embed_dim, cfg.model.encoder_depth, cfg.model.encoder_heads) == (192, 12, 3)
    assert cfg.model.mask_ratio == 0.5 and cfg.train.epochs == 3 and cfg.train.batch_size == 64
    explicit = resolve_config(None, {"model": {"name": "vit-tiny", "embed_dim": 96}}, "flags")
    assert explicit.model.embed_dim == 96 and explicit.model.encoder_depth == 12


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
    assert "--accum-steps 10 = 40 images per optimizer step, but the training set has only 12" in capsys.readouterr().err


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
