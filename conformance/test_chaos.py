"""Chaos under load, black-box: the Trellis process killed (`kill -9`) and restarted while a
client writes through the API and another sends requests through the data plane; the data
directory's disk full while writes go on. Counted and asserted: no acknowledged write is lost,
and how long each recovery took.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from support import make_client, wait_for
from test_dataplane import DataPlane, VpcClient

CONFIG = "relaxed_health_checks = true\n"
ROOT = os.geteuid() == 0


def writer(server, vpc: str, stop: threading.Event, counts: dict, prefix: str):
    """Creates target groups until `stop`, one attempt each (no retries): which were
    acknowledged, and how many failed."""
    # The suite's clients make one attempt each (no retries).
    lattice = make_client("vpc-lattice", server.endpoint, connect_timeout=1, read_timeout=5)
    i = 0
    while not stop.is_set():
        name = f"{prefix}-{i}"
        i += 1
        try:
            lattice.create_target_group(name=name, type="IP",
                                        config={"port": 80, "protocol": "HTTP", "vpcIdentifier": vpc})
            counts["acknowledged"].append(name)
            time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - every failure is counted
            counts["failed"].append(repr(e)[:120])
            time.sleep(0.02)


def test_kill_9_of_the_server_under_load_loses_no_acknowledged_write(server_factory):
    server = server_factory(config_text=CONFIG, env={"TRELLIS_QUOTAS_TARGET_GROUPS": "100000"})
    dp = DataPlane(server)
    try:
        m, _ = dp.serving_app()
        vpc = m["vpc"]
        info = dp.ingress(vpc)
        stop = threading.Event()
        counts = {"acknowledged": [], "failed": []}
        thread = threading.Thread(target=writer, args=(server, vpc, stop, counts, "chaos"), daemon=True)
        thread.start()
        time.sleep(1.5)
        before = len(counts["acknowledged"])
        server.kill()
        killed = time.monotonic()
        server.spawn(port=server.port)
        server.wait_healthy()
        api_back = time.monotonic() - killed

        def served():
            try:
                c = VpcClient(info["address"], dp.real_port(info, 80), timeout=2)
                try:
                    return c.request("GET", "/", m["host"]).target == "app"
                finally:
                    c.close()
            except OSError:
                return False
        wait_for(served, 30, interval=0.05, message="the data plane serving again after the restart")
        plane_back = time.monotonic() - killed
        time.sleep(1.5)
        stop.set()
        thread.join(15)
        lattice = make_client("vpc-lattice", server.endpoint)
        stored = set()
        kwargs = {}
        while True:
            page = lattice.list_target_groups(**kwargs)
            stored |= {t["name"] for t in page["items"]}
            if not page.get("nextToken"):
                break
            kwargs = {"nextToken": page["nextToken"]}
        lost = [n for n in counts["acknowledged"] if n not in stored]
        print(f"\nkill -9 under load: {len(counts['acknowledged'])} writes acknowledged ({before} before the kill), "
              f"{len(counts['failed'])} refused while down, {len(lost)} lost; API back after {api_back:.2f}s, "
              f"data plane after {plane_back:.2f}s")
        assert lost == [], lost
        assert len(counts["acknowledged"]) > before > 0, counts["failed"][:5]
    finally:
        dp.close()


@pytest.mark.skipif(not ROOT, reason="mounting a small file system for the data directory needs root")
def test_a_full_disk_refuses_writes_with_a_server_error_and_loses_nothing(server_factory):
    mount = Path(tempfile.mkdtemp(prefix="trellis-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        server = server_factory(config_text=CONFIG, data_dir=mount / "data")
        lattice = server.client("vpc-lattice")
        ec2 = server.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        acknowledged = []
        for i in range(5):
            lattice.create_service_network(name=f"before-{i}")
            acknowledged.append(f"before-{i}")
        # Fill the disk.
        filler = mount / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        refused = []
        no_retries = make_client("vpc-lattice", server.endpoint)
        for i in range(20):
            try:
                no_retries.create_target_group(name=f"full-{i}", type="IP",
                                               config={"port": 80, "protocol": "HTTP", "vpcIdentifier": vpc})
                acknowledged.append(f"full-{i}")
            except no_retries.exceptions.InternalServerException as e:
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 500
                refused.append(f"full-{i}")
        assert refused, "a full disk must refuse some writes"
        assert server.healthy(), "the server lives on with its disk full"
        # Space again: writes go on, and everything acknowledged is there.
        filler.unlink()
        lattice.create_service_network(name="after")
        acknowledged.append("after")
        names = {s["name"] for s in lattice.list_service_networks()["items"]}
        names |= {t["name"] for t in lattice.list_target_groups()["items"]}
        lost = [n for n in acknowledged if n not in names]
        print(f"\nfull disk: {len(refused)} writes refused with a 500, {len(acknowledged)} acknowledged, {len(lost)} lost")
        assert lost == []
        assert not any(n in names for n in refused), "a refused write must not be there"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)
