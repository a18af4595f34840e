"""`streamrnn replay`: JSON lines, CSV and river series through the worker, with the closing table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from .test_service_support import REPO, lines, supervised_events


def replay(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "streamrnn_service.cli", "replay", *args], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO)}, timeout=60)


def test_jsonl_and_csv(tmp_path):
    (tmp_path / "events.jsonl").write_bytes(lines(supervised_events(200)) + b"not json\n")
    result = replay(tmp_path, "events.jsonl")
    assert result.returncode == 0, result.stderr
    assert "| streamrnn |" in result.stdout and "| persistence (previous value) |" in result.stdout
    assert "201 events (1 rejected)" in result.stdout
    assert "201/201 events" in result.stderr  # the progress bar

    rows = ["date,level,flow"] + [f"2024-01-{i % 28 + 1:02d},{i % 5},{(i * 7) % 11}" for i in range(150)]
    (tmp_path / "series.csv").write_text("\n".join(rows) + "\n")
    result = replay(tmp_path, "series.csv", "--quiet", "--set", "model.units=4")
    assert result.returncode == 0, result.stderr
    assert "150 events (0 rejected)" in result.stdout and "| 149 |" in result.stdout


def test_river_series_and_plot(tmp_path):
    result = replay(tmp_path, "river:waterflow", "--quiet", "--plot", "out.png")
    assert "1268 events (0 rejected)" in result.stdout
    if importlib.util.find_spec("matplotlib") is None:
        assert result.returncode == 1 and "needs matplotlib" in result.stderr
    else:
        assert result.returncode == 0 and (tmp_path / "out.png").stat().st_size > 0


def test_invalid_setting_exits_2(tmp_path):
    result = replay(tmp_path, "river:waterflow", "--set", "model.lr=-1")
    assert result.returncode == 2 and "model.lr" in result.stderr
