from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.components import need
from tests.support.named import DnsCluster, start_cluster
from tests.support.sshd import Sshd, start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsCluster]:
    """A fresh primary and secondary `named` for ZONE, with a TSIG key that may update it."""
    cluster = start_cluster(tmp_path_factory.mktemp("named"))
    yield cluster
    cluster.stop()


@pytest.fixture
def rsync() -> str:
    return need("rsync")


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own lock directory for script runs, beside the trees it lists."""
    monkeypatch.setenv("SYNCO_LOCK_DIR", str(tmp_path.parent / f"{tmp_path.name}-locks"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test hides a gap: any skip fails the run."""
    from tests.support.components import in_ci

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if in_ci() and skipped and exitstatus == 0:
        print(f"\nCI: {len(skipped)} test(s) skipped; in CI every component must be present")
        session.exitstatus = 1
