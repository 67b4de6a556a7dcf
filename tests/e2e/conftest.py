"""End to end: the real CLI, controller, scheduler, launchers and MPI on a site of each test module's own.

A module gets its site from :func:`site`, made from the module's ``SETTINGS`` (and ``SITE_FILES``, extra files for
the site directory); the Slurm modules override it with a site on the real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.e2e import E2ESite


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ESite]:
    """A local site named ``e2e-<module>`` with its controller running; every process it caused stops after."""
    module = request.module
    name = "e2e-" + module.__name__.rpartition(".")[2].removeprefix("test_").replace("_", "-")
    files = getattr(module, "SITE_FILES", None)
    with E2ESite.running(tmp_path_factory.mktemp(name), name, module.SETTINGS, files=files) as s:
        yield s
