"""The wheel: ``balsamctl`` and ``balsam`` at the top of site-packages and nothing else, the layer folders' code
inside ``balsamctl`` as real files (the source tree links them), with the type markers and the data files the
installed package reads (job script templates, platform presets, store migrations)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("schemas", "schedulers", "controller", "launcher")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built (``pip wheel --no-build-isolation``) from a copy of the repository's files, links kept as
    links: a build writes into its source tree, which other tests read meanwhile."""
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        path, copy = REPO / name, src / name
        if not os.path.lexists(path):  # deleted, not yet committed
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            copy.symlink_to(os.readlink(path))
        else:
            shutil.copy2(path, copy)
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*build, "--disable-pip-version-check", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    [path] = out.glob("balsamctl-*.whl")
    with zipfile.ZipFile(path) as built:
        yield built


def names_under(built: zipfile.ZipFile, folder: str) -> set[str]:
    """The names of the wheel's files under ``folder``, relative to it."""
    return {n.removeprefix(folder) for n in built.namelist() if n.startswith(folder)}


def source_names(folder: Path, pattern: str) -> set[str]:
    """The names of the source files under ``folder`` that match ``pattern``, relative to it."""
    return {p.relative_to(folder).as_posix() for p in folder.glob(pattern) if "__pycache__" not in p.parts}


def test_the_wheel_holds_balsamctl_and_balsam_at_the_top_and_nothing_else(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = [t for t in top if t.endswith(".dist-info")]
    assert len(dist_info) == 1, top
    assert top == {"balsamctl", "balsam", *dist_info}, "the layer folders, tests and bench stay out of site-packages"


def test_the_wheel_ships_the_type_markers_and_the_data_files(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert {"balsamctl/py.typed", "balsam/py.typed"} <= names
    site = REPO / "balsamctl" / "site"
    templates = source_names(site / "templates", "*.sh")
    assert templates and templates <= names_under(wheel, "balsamctl/site/templates/")
    platforms = source_names(site / "platforms", "*.yml")
    assert platforms and platforms <= names_under(wheel, "balsamctl/site/platforms/")
    migrations = source_names(REPO / "balsamctl" / "store" / "migrations", "**/*.py") | {"script.py.mako"}
    assert "versions/0001_initial.py" in migrations
    assert migrations <= names_under(wheel, "balsamctl/store/migrations/")


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_folder_lands_in_balsamctl_as_real_files(wheel: zipfile.ZipFile, layer: str) -> None:
    """``balsamctl/<layer>`` links to the top-level folder ``<layer>/`` in the source tree; the wheel holds its
    files themselves, byte for byte."""
    folder = REPO / layer
    modules = source_names(folder, "**/*.py")
    assert "__init__.py" in modules and modules <= names_under(wheel, f"balsamctl/{layer}/")
    for name in modules:
        info = wheel.getinfo(f"balsamctl/{layer}/{name}")
        assert stat.S_ISREG(info.external_attr >> 16), f"balsamctl/{layer}/{name} is not a regular file"
        assert wheel.read(info) == (folder / name).read_bytes()
