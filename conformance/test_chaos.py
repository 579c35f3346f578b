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


# A target of its own process, so that it can be killed with SIGKILL: answers every request with
# its name after a few milliseconds (so that requests are in flight when it dies), and prints
# its port once it listens.
TARGET_CODE = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _serve(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path != "/healthz":
            time.sleep(0.005)
        body = sys.argv[1].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = _serve
    def log_message(self, *a):
        pass

s = ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
print(s.server_address[1], flush=True)
s.serve_forever()
"""


class ProcessTarget:
    def __init__(self, name: str):
        import sys
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", TARGET_CODE, name], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.port = int(self.proc.stdout.readline())

    def end(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.proc.wait(10)


def load(address: str, port: int, host: str, stop: threading.Event, outcomes: list, method: str):
    """Requests on a keep-alive connection until `stop` (at most 20,000 or 60 s): each outcome is
    (time, target name or the error)."""
    client = VpcClient(address, port, timeout=5)
    deadline = time.monotonic() + 60
    for _ in range(20_000):
        if stop.is_set() or time.monotonic() > deadline:
            break
        try:
            r = client.request(method, "/", host, body=b"x" * 64 if method == "POST" else None)
            outcomes.append((time.monotonic(), r.body.decode() if r.status == 200 else f"HTTP {r.status}"))
        except Exception as e:  # noqa: BLE001 - every failure is counted
            outcomes.append((time.monotonic(), f"error {e!r}"[:80]))
            client.close()
            client = VpcClient(address, port, timeout=5)
    client.close()


def test_targets_that_drain_lose_no_request_and_killed_ones_at_most_those_in_flight(server_factory):
    """Four clients (three GET, one POST) run while one target of three is deregistered (it
    drains, then stops) and another is killed with SIGKILL: no request fails while the first
    drains, and at most the requests in flight (one a client) when the second dies; the dead
    one is marked unhealthy by the health checks, and the survivor takes everything."""
    from test_dataplane import CONFIG as DP_CONFIG
    from test_dataplane import FAST_CHECKS, forward
    server = server_factory(config_text=DP_CONFIG)
    dp = DataPlane(server)
    targets = {n: ProcessTarget(n) for n in ("a", "b", "c")}
    stop = threading.Event()
    outcomes: list = []
    threads = []
    try:
        vpc = dp.res.vpc()
        tg = dp.tg(vpc, health=FAST_CHECKS)["id"]
        dp.register(tg, *[("127.0.0.1", t.port) for t in targets.values()])
        m = dp.mesh(forward(tg), vpc=vpc)
        info = dp.ingress(vpc)
        address, port = info["address"], dp.real_port(info, 80)
        key = {n: ("127.0.0.1", t.port) for n, t in targets.items()}

        def statuses():
            listed = dp.targets_of(tg)
            return {n: listed[k]["status"] if k in listed else None for n, k in key.items()}
        wait_for(lambda: set(statuses().values()) == {"HEALTHY"}, 20, interval=0.2, message="three healthy targets")
        for method in ("GET", "GET", "GET", "POST"):
            threads.append(threading.Thread(target=load, args=(address, port, m["host"], stop, outcomes, method),
                                            daemon=True))
            threads[-1].start()
        time.sleep(1)

        # Graceful: deregistered, drained, then stopped.
        t0 = time.monotonic()
        dp.lattice.deregister_targets(targetGroupIdentifier=tg, targets=[{"id": "127.0.0.1", "port": targets["a"].port}])
        wait_for(lambda: statuses()["a"] is None, 20, interval=0.1, message="a drained and removed")
        drained = time.monotonic() - t0
        targets["a"].end(15)
        time.sleep(1)
        t1 = time.monotonic()
        graceful = [o for o in outcomes if t0 <= o[0] < t1]

        # Abrupt: SIGKILL with requests in flight.
        targets["b"].end(9)
        wait_for(lambda: statuses()["b"] == "UNHEALTHY", 20, interval=0.1, message="b marked unhealthy")
        unhealthy = time.monotonic() - t1
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(15)
        t2 = time.monotonic()
        abrupt = [o for o in outcomes if t1 <= o[0] <= t2]
        failed_graceful = [o[1] for o in graceful if o[1] not in key]
        failed_abrupt = [o[1] for o in abrupt if o[1] not in key]
        last = [o[1] for o in outcomes[-40:]]
        print(f"\ndrain: {len(graceful)} requests while a target was deregistered and stopped "
              f"(drained in {drained:.1f}s), {len(failed_graceful)} failed; SIGKILL: {len(abrupt)} requests after, "
              f"{len(failed_abrupt)} failed {failed_abrupt[:4]}, marked UNHEALTHY after {unhealthy:.1f}s")
        assert len(graceful) > 50 and len(abrupt) > 50, (len(graceful), len(abrupt))
        assert failed_graceful == [], failed_graceful[:5]
        assert len(failed_abrupt) <= len(threads), failed_abrupt
        assert set(last) == {"c"}, last
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        for t in targets.values():
            t.end(9)
        dp.close()
