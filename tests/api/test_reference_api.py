"""Every Python snippet of the reference text ("Scheduling Launchers"), run verbatim against a real site."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from balsamctl.schemas import BatchJobState
from balsamctl.site.create import init_site
from balsamctl.site.directory import SiteDirectory
from balsamctl.store import Selector

REFERENCE = Path(__file__).parent / "scheduling-launchers.md"


def snippets() -> list[str]:
    """The ```python blocks of the reference text, in order."""
    return re.findall(r"```python\n(.*?)```", REFERENCE.read_text(), flags=re.S)


@pytest.fixture
def theta_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SiteDirectory:
    """The reference text's site: id 123, queue full-node, project datascience, its optional params."""
    site = init_site(tmp_path / "theta-gpu", "myProject-theta-gpu", site_id=123)
    settings = yaml.safe_load((site.path / "settings.yml").read_text())
    settings["allowed_queues"] = {"full-node": {"max_nodes": 128, "max_walltime": 120, "max_queued_jobs": 20}}
    settings["allowed_projects"] = ["datascience"]
    settings["optional_batch_job_params"] = {"mig_count": "0", "singularity_prime_cache": "no"}
    (site.path / "settings.yml").write_text(yaml.safe_dump(settings))
    (site.path / "app.yaml").write_text(
        "apiVersion: balsam/v1\nkind: App\nmetadata: {name: simulation-x}\nspec: {command: ./simulate}\n"
    )
    site = SiteDirectory.load(site.path)
    from balsamctl.site.apply import apply_documents, load_paths

    apply_documents(site, load_paths([str(site.path / "app.yaml")], False))
    monkeypatch.chdir(site.path)
    return site


def batchjobs(site: SiteDirectory) -> list:  # type: ignore[type-arg]
    return [o.manifest for o in site.store.list_objects(Selector("BatchJob", (site.site_id,)))]


def test_every_snippet_runs_verbatim(theta_gpu: SiteDirectory) -> None:
    blocks = snippets()
    assert len(blocks) == 7, "the reference text has seven Python snippets"
    namespace: dict[str, object] = {}

    exec(blocks[0], namespace)  # Job.objects.create(...) and BatchJob.objects.create(...)
    job = namespace["job"]
    assert job.site_id == 123 and job.workdir == "test-runs/foo/1" and job.app == "simulation-x"  # type: ignore[attr-defined]
    [first] = batchjobs(theta_gpu)
    assert (first.spec.num_nodes, first.spec.queue, first.spec.project) == (1, "full-node", "datascience")

    # The controller would submit it; play the scheduler's part so the next snippets have something to find.
    store = theta_gpu.store
    assert store.set_batchjob_status(
        123, first.metadata.name, src=BatchJobState.pending_submission, dst=BatchJobState.queued, scheduler_id="1234"
    )
    exec(blocks[1], namespace)  # queued_nodes = sum(...)
    assert namespace["queued_nodes"] == 1

    exec(blocks[2], namespace)  # BatchJob.objects.filter(scheduler_id=1234).update(state="pending_deletion")
    [first] = batchjobs(theta_gpu)
    assert first.status.state == BatchJobState.pending_deletion
    assert first.metadata.deletion_timestamp is not None

    for block in blocks[3:]:
        exec(block, namespace)
    made = batchjobs(theta_gpu)[1:]
    assert [b.spec.optional_params for b in made[:2]] == [{"singularity_prime_cache": "yes"}, {"mig_count": "3"}]
    assert made[2].spec.num_nodes == 4 and made[2].spec.filter_tags == {"system": "H2O", "scale": "4"}
    assert made[3].spec.num_nodes == 128
    assert [(p.job_mode, p.num_nodes, p.filter_tags) for p in made[3].spec.partitions] == [
        ("mpi", 2, {"role": "leader"}),
        ("serial", 126, {"role": "worker"}),
    ]


def test_querysets_are_lazy_countable_sliceable(theta_gpu: SiteDirectory) -> None:
    from balsam.api import BatchJob, Job

    jobs = Job.objects.bulk_create(
        [Job(app_id="SimulationX", workdir=f"runs/{i}", tags={"batch": str(i % 2)}) for i in range(30)]
    )
    assert len({j.name for j in jobs}) == 30 and all(j.id for j in jobs)
    query = Job.objects.filter(tags={"batch": "1"})
    assert query.count() == 15 == len(list(query))
    assert [j.workdir for j in query[2:4]] == ["runs/5", "runs/7"]
    assert query[0].workdir == "runs/1"
    assert Job.objects.filter(site_id=999).count() == 0
    assert Job.objects.get(name=jobs[0].name).workdir == "runs/0"
    assert Job.objects.filter(state="CREATED").first() is not None
    with pytest.raises(ValueError):
        BatchJob.objects.create(num_nodes=1000)  # over the queue's max_nodes: refused, nothing stored
    assert BatchJob.objects.count() == 0
