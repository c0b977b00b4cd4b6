"""`python -m pipeline`: every option explains itself, --quiet prints nothing, examples use shipped files."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["edit", "methods", "bench"])
def test_every_option_has_help(command):
    sub = _subparsers(build_parser())[command]
    missing = [a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


def test_cli_examples_name_files_the_repository_ships():
    texts = [build_parser().description, _subparsers(build_parser())["edit"].description]
    images = {m for t in texts for m in re.findall(r"edit (\S+\.(?:jpg|png))", t)}
    assert images and all((ROOT / m).is_file() for m in images)


def test_quiet_prints_nothing(tmp_path):
    out = tmp_path / "edited.png"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "edit", "study/items/cat.jpg", "-i", "make it snowy",
                           "--method", "ip2p-bicubic", "--size", "256", "--steps", "2", "--out", str(out), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 0
    assert proc.stdout == ""
    assert "%|" not in proc.stderr and "it/s" not in proc.stderr  # no progress bar of ours or of a library


def test_offline_sd15_is_one_line_on_stderr(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache: nothing to load
    proc = subprocess.run([sys.executable, "-m", "pipeline", "edit", "study/items/cat.jpg", "-i", "make it snowy",
                           "--models", "sd15", "--size", "256", "--out", str(tmp_path / "x.png")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the sd15 set downloads"), proc.stderr
