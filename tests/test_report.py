"""The HTML report: made from real (tiny) runs by `compare --report` and `report`, self-contained,
and rendered by a real headless browser without errors."""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from browser import Chromium, find_chromium
from perennial.cli import app

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """naive and replay, two seeds each, on split-digits (1 epoch), with continual evaluation."""
    tmp = tmp_path_factory.mktemp("grid")
    r = invoke(
        "compare",
        "-b",
        "split-digits",
        "--strategies",
        "naive,replay",
        "--seeds",
        "2",
        "--set",
        "train.epochs=2",
        "--eval-every",
        "2",
        "--eval-budget",
        "60",
        "--store",
        str(tmp / "store"),
        "--json",
        str(tmp / "cmp.json"),
        "--report",
        str(tmp / "report"),
    )
    assert r.exit_code == 0, r.output
    assert f"report: {tmp / 'report' / 'report.html'}" in r.output.replace("\n", "")
    return tmp


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_compare_writes_a_self_contained_report(grid):
    rep = grid / "report"
    html = (rep / "report.html").read_text()
    pngs = sorted(p.name for p in rep.glob("*.png"))
    assert pngs == sorted(
        [
            "comparison.png",
            "first-experience.png",
            "naive-split-digits-class-matrix.png",
            "naive-split-digits-class-stability.png",
            "replay-split-digits-class-matrix.png",
            "replay-split-digits-class-stability.png",
        ]
    )
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(pngs)
    files = {(rep / p).read_bytes() for p in pngs}
    for data in embedded:
        raw = base64.b64decode(data)
        assert raw in files  # the PNG next to the report is the embedded image
        w, h = png_size(raw)
        assert w > 300 and h > 200
    # nothing that would need the network or run code
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html) and "<script" not in html
    for text in ("naive", "replay", "exp0[0+1]", "min-ACC", "stability gap", "Strategies compared", "± "):
        assert text in html
    # JSON of the grid carries the continual metrics per strategy
    rows = json.loads((grid / "cmp.json").read_text())["results"]
    assert all(row["min_acc_mean"] is not None and row["stability_gap_mean"] is not None for row in rows)


def test_report_command(grid):
    store = str(grid / "store")
    ids = json.loads((grid / "cmp.json").read_text())["run_ids"]
    r = invoke("report", ids[0], "--store", store, "--out", str(grid / "one"))
    assert r.exit_code == 0, r.output
    one = sorted(p.name for p in (grid / "one").glob("*.png"))
    assert one == ["naive-split-digits-class-matrix.png", "naive-split-digits-class-stability.png"]
    assert "Strategies compared" not in (grid / "one" / "report.html").read_text()
    r = invoke("report", "--from", str(grid / "cmp.json"), "--store", store, "--out", str(grid / "all"))
    assert r.exit_code == 0 and (grid / "all" / "comparison.png").exists()
    r = invoke("report", ids[0] + "x", "--store", store, "--out", str(grid / "bad"))
    assert r.exit_code == 2 and "did you mean" in r.output and not (grid / "bad").exists()
    r = invoke("report", "--store", store)
    assert r.exit_code == 2 and "run id" in r.output
    r = invoke("report", "--help")
    assert r.exit_code == 0 and "--out" in r.output and "--from" in r.output
    # show prints the continual metrics of a stored run
    r = invoke("show", ids[-1], "--store", store)
    assert r.exit_code == 0 and "min_acc" in r.output and "stability_gap" in r.output


def test_report_without_per_step_log(tmp_path):
    store = str(tmp_path / "s")
    r = invoke("run", "-b", "split-digits", "--set", "train.epochs=1", "--store", store, "--run-id", "plain", "-q")
    assert r.exit_code == 0, r.output
    r = invoke("report", "plain", "--store", store, "--out", str(tmp_path / "rep"))
    assert r.exit_code == 0, r.output
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "--eval-every N" in html and "min-ACC" not in html.split("<h2>Definitions")[0]
    assert [p.name for p in (tmp_path / "rep").glob("*.png")] == ["naive-split-digits-class-matrix.png"]


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("websocket", reason="websocket-client is missing; make install (dev extra) provides it")
    browser = Chromium(exe)
    yield browser
    browser.close()


def test_report_renders_in_a_headless_browser(grid, chromium):
    page = chromium.check_page((grid / "report" / "report.html").as_uri())
    assert page.console_errors == []
    assert page.external_requests == []
    assert len(page.images) == 6
    for img in page.images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report.png").write_bytes(page.screenshot)
    w, h = png_size(page.screenshot)
    assert w == 1280 and h > 900  # the whole page, not just the first screen


def test_browser_check_catches_broken_pages(tmp_path, chromium):
    """The checks above can fail: a broken image and a console error are both seen."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><img src='data:image/png;base64,AAAA' alt='broken'>"
        "<script>console.error('boom')</script></body></html>"
    )
    page = chromium.check_page(bad.as_uri())
    assert any("boom" in e for e in page.console_errors)
    assert page.images and page.images[0]["width"] == 0
