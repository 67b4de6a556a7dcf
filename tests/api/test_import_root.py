"""One import root: the design card's top-level folders hold the code of ``balsamctl.<layer>``, and importing one of
them under its folder name (possible from the repository root) is refused rather than loading a second copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("schemas", "schedulers", "controller", "launcher")


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_as_balsamctl_layer_and_only_so(layer: str) -> None:
    ok = subprocess.run([sys.executable, "-c", f"import balsamctl.{layer}"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bare = subprocess.run([sys.executable, "-c", f"import {layer}"], cwd=REPO, capture_output=True, text=True)
    assert bare.returncode != 0
    assert f"import balsamctl.{layer}, not {layer}" in bare.stderr
