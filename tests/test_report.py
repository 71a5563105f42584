"""`maelab report`: markdown + self-contained HTML of a run or a results directory, checked in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from maelab.cli import main
from maelab.config import ConfigError
from maelab.report import markdown_to_html, write_report
from maelab.train import pretrain
from tests.conftest import tiny_config, write_image_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def fake_run(run: Path, lr: float, losses: list[float]) -> Path:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {"name": "ref"}, "train": {"lr": lr, "out": str(run)}}))
    records = [{"step": i + 1, "epoch": i + 1, "loss": v, "lr": lr, "img_per_s": 10.0} for i, v in enumerate(losses)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "summary.json").write_text(
        json.dumps({"status": "finished", "steps": len(losses), "final_loss": losses[-1]})
    )
    return run


def test_results_dir_report_collects_runs_tables_and_figures(tmp_path: Path) -> None:
    root = tmp_path / "results"
    a = fake_run(root / "runs" / "a", 0.001, [2.0, 1.5, 1.2])
    fake_run(root / "runs" / "b", 0.01, [2.0, 1.8, 1.7])
    (a / "eval").mkdir()
    (a / "eval" / "knn.md").write_text("# k-NN of a\n\n| k | top-1 |\n|---|---|\n| 20 | 41.5 |\n")
    (a / "eval" / "knn.json").write_text(json.dumps({"top1": 41.5}))  # has a .md: not shown twice
    (a / "eval" / "linear.json").write_text(json.dumps({"test_accuracy": 55.25, "probe": {"best_lr": 0.1}}))
    Image.new("RGB", (40, 20), "red").save(a / "eval" / "reconstruction_mr0.75_seed0.png")
    Image.new("RGB", (30, 30), "blue").save(root / "mask_ratio_sweep.png")
    (root / "summary.md").write_text("# Sweep\n\nbest mask ratio: 0.75\n<script>alert(1)</script>\n")

    md_path, html_path = write_report(root, reconstruct=False)
    md = md_path.read_text()
    assert "## Runs" in md and "train.lr" in md  # the option that differs is a column; equal ones are not
    assert "model.name" not in md
    assert "## Loss curves" in md and (root / "report_files" / "loss_curves.png").is_file()
    assert "reconstruction_mr0.75_seed0.png" in md.split("## Reconstructions")[1].split("##")[0]
    assert "| 20 | 41.5 |" in md and "#### k-NN of a" in md  # included table, heading nested
    assert "| probe.best_lr | 0.1 |" in md and "knn: top1" not in md
    assert "best mask ratio: 0.75" in md and "mask_ratio_sweep.png" in md

    page = html_path.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == md.count("![") == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script>" not in page  # raw HTML of included files is escaped


def test_markdown_to_html_embeds_only_existing_images(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    page = markdown_to_html("![a](x.png)\n\n![b](missing.png)\n", tmp_path, "t")
    assert 'src="data:image/png;base64,' in page and 'src="missing.png"' in page


def test_report_of_a_missing_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        write_report(tmp_path / "nope")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "nope is not a directory" in capsys.readouterr().err


def open_in_chromium(html_path: Path, screenshot: Path) -> tuple[list[list], list[dict]]:
    """Load a page in headless Chromium; return [complete, naturalWidth, naturalHeight] per image and the
    console log entries of level SEVERE (errors), and save a full-page screenshot."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(html_path.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        driver.set_window_size(1200, driver.execute_script("return document.documentElement.scrollHeight"))
        driver.save_screenshot(str(screenshot))
        # The checks can fail: a page with a console error and a broken image is caught.
        driver.get("data:text/html,<img src='missing.png'><script>console.error('boom')</script>")
        assert driver.execute_script("return document.images[0].naturalWidth") == 0
        assert any("boom" in e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE")
    finally:
        driver.quit()
    return images, errors


@pytest.mark.slow
@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless browser check needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_report_of_a_real_run_renders_in_headless_chromium(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data", per_class=50, size=32)
    run = pretrain(tiny_config(data, tmp_path / "run", subset=100, epochs=2, batch_size=20))
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Loss curves" in md and "## Reconstructions" in md and "report_files/reconstruction.png" in md

    screenshot = Path(os.environ.get("MAELAB_REPORT_SCREENSHOT", tmp_path / "report.png"))
    images, errors = open_in_chromium(run / "report.html", screenshot)
    assert len(images) == 2  # loss curves + reconstruction figure
    assert all(complete and width > 0 and height > 0 for complete, width, height in images), images
    assert errors == []
    assert Image.open(screenshot).size[0] == 1200
