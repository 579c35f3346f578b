"""Fixtures for the Trellis conformance suite.

The suite runs against TRELLIS_ENDPOINT when it is set; otherwise it starts `trellis serve`
(TRELLIS_BIN, default <repo>/target/debug/trellis) on a free 127.0.0.1 port with a temporary
data directory and a config file whose quotas are raised enough for the whole suite.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from botocore import UNSIGNED

import support
from support import OTHER_REGION, REGION, Factory, TrellisServer, make_client

# Quotas for the shared server: the suite creates a few hundred resources of each kind in one
# region (pagination makes 250 services and 250 targets) and cleanup deletes are asynchronous.
SESSION_QUOTAS = {
    "service_networks": 1000,
    "services": 5000,
    "target_groups": 5000,
    "targets_per_target_group": 1000,
}

_LIVE_SERVERS: list[TrellisServer] = []


def _kill_all():
    for s in list(_LIVE_SERVERS):
        s.close()


atexit.register(_kill_all)


# --------------------------------------------------------------------------------------------
# Nothing left behind: after the whole session, no process of the trellis binary or of etcd, no
# network namespace and no link that was not there before it started. A leak fails the run.
# --------------------------------------------------------------------------------------------


def _footprint() -> dict[str, set]:
    binaries = {os.path.realpath(support.TRELLIS_BIN)}
    etcd = shutil.which("etcd")
    if etcd:
        binaries.add(os.path.realpath(etcd))
    processes = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.path.realpath(f"/proc/{entry}/exe")
            with open(f"/proc/{entry}/stat") as f:
                started = f.read().rsplit(")", 1)[1].split()[19]
        except OSError:
            continue
        if exe in binaries:
            processes.add((int(entry), started, os.path.basename(exe)))
    run = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True).stdout  # noqa: E731
    namespaces = {line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()}
    links = {line.split(":")[1].strip().split("@")[0] for line in run("ip", "-o", "link").splitlines() if ":" in line}
    # Files and mounts the suite makes under the temp directory (data directories, etcd's, the
    # small file system of the full-disk test) are all named so.
    ours = ("trellis", "etcd-")
    files = {e for e in os.listdir(tempfile.gettempdir()) if e.startswith(ours)}
    with open("/proc/mounts") as f:
        mounts = {line.split()[1] for line in f if os.path.basename(line.split()[1]).startswith(ours)}
    return {"processes": processes, "namespaces": namespaces, "links": links, "files": files, "mounts": mounts}


def pytest_sessionstart(session):
    session.config._trellis_footprint = _footprint()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_trellis_footprint", None)
    if before is None or support.EXTERNAL:
        return
    _kill_all()
    deadline = time.monotonic() + 15
    while True:
        now = _footprint()
        left = {kind: sorted(now[kind] - before[kind]) for kind in now}
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if any(left.values()):
        print(f"\nleft behind by the suite: {left}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="trellis-conformance-"))
    yield d
    if os.environ.get("TRELLIS_KEEP_TMP"):
        print(f"\nconformance temp dir kept: {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoint(workdir):
    """Base URL of the Trellis under test (external via TRELLIS_ENDPOINT, else a spawned one)."""
    ext = os.environ.get("TRELLIS_ENDPOINT")
    if ext:
        yield ext.rstrip("/")
        return
    server = TrellisServer(workdir / "session", quotas=SESSION_QUOTAS)
    _LIVE_SERVERS.append(server)
    try:
        server.start()
        yield server.endpoint
    finally:
        # Gracefully: the server stops the tasks it runs.
        try:
            server.stop(timeout=60)
        finally:
            server.close()
        _LIVE_SERVERS.remove(server)


@pytest.fixture
def server_factory(workdir):
    """Start extra servers with their own config: `srv = server_factory(quotas={...})`.

    Every server started through the factory is killed (by PID) when the test ends.
    """
    started: list[TrellisServer] = []

    def start(quotas=None, env=None, data_dir=None, config_text=None, wait=True):
        server = TrellisServer(workdir / f"extra-{uuid.uuid4().hex[:10]}",
                               quotas=quotas, env=env, data_dir=data_dir, config_text=config_text)
        started.append(server)
        _LIVE_SERVERS.append(server)
        if wait:
            server.start()
        return server

    yield start
    for s in started:
        s.close()
        if s in _LIVE_SERVERS:
            _LIVE_SERVERS.remove(s)


@pytest.fixture(scope="session")
def lattice(endpoint):
    return make_client("vpc-lattice", endpoint)


@pytest.fixture(scope="session")
def lattice_nv(endpoint):
    """vpc-lattice client with botocore's client-side parameter validation switched off, so
    requests that break min/required/union rules reach the server."""
    return make_client("vpc-lattice", endpoint, parameter_validation=False)


@pytest.fixture(scope="session")
def ec2(endpoint):
    return make_client("ec2", endpoint)


@pytest.fixture(scope="session")
def ecs(endpoint):
    return make_client("ecs", endpoint)


@pytest.fixture(scope="session")
def acm(endpoint):
    return make_client("acm", endpoint)


@pytest.fixture(scope="session")
def lattice_other_region(endpoint):
    return make_client("vpc-lattice", endpoint, region=OTHER_REGION)


@pytest.fixture(scope="session")
def ec2_other_region(endpoint):
    return make_client("ec2", endpoint, region=OTHER_REGION)


@pytest.fixture(scope="session")
def lattice_unsigned(endpoint):
    return make_client("vpc-lattice", endpoint, signature_version=UNSIGNED)


@pytest.fixture
def res(lattice, ec2):
    """Resource factory (us-east-1) with best-effort cleanup after the test."""
    f = Factory(lattice, ec2)
    yield f
    f.cleanup()


@pytest.fixture
def res_other_region(lattice_other_region, ec2_other_region):
    f = Factory(lattice_other_region, ec2_other_region)
    yield f
    f.cleanup()


# Convenience fixtures for the common building blocks -------------------------------------------


@pytest.fixture
def vpc(res):
    return res.vpc()


@pytest.fixture
def sn(res):
    return res.sn()


@pytest.fixture
def svc(res):
    return res.service()


@pytest.fixture
def tg(res, vpc):
    return res.tg(vpc=vpc)


@pytest.fixture
def listener(res, svc, tg):
    return res.listener(svc["id"], tg_id=tg["id"], port=80)


__all__ = ["support", "REGION"]
