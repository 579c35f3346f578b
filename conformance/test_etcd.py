"""Trellis over etcd (`trellis serve --store etcd://…`): what is created through one server lives in
etcd, so a server started afresh (a new data directory) against the same etcd finds it; a server
whose connection to etcd broke while etcd compacted the history it was watching from reads
everything afresh and serves the changes it missed; an etcd that cannot be reached stops the
server at start with a one-line error.

The tests start their own etcd (Debian's etcd-server) on free loopback ports and kill it by PID
afterwards; they are skipped, saying why, when no `etcd` binary is installed.
"""

import base64
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from support import REGION, Etcd, client_config, free_port, list_all, require_binary, uname, wait_for


@pytest.fixture
def etcd(workdir):
    if shutil.which("etcd") is None:
        pytest.skip("no etcd binary on PATH (apt-get install etcd-server)")
    server = Etcd(workdir)
    try:
        yield server.wait_healthy()
    finally:
        server.kill()


def test_state_lives_in_etcd_not_the_data_directory(server_factory, etcd):
    first = server_factory(env={"TRELLIS_STORE": etcd.url})
    la = first.client("vpc-lattice")
    sn = la.create_service_network(name=uname("sn"), tags={"k": "v"})
    assert first.stop() == 0, f"trellis serve should exit 0 on SIGTERM; log:\n{first.log_tail()}"

    # A new server with a data directory of its own, on the same etcd: the same state.
    second = server_factory(env={"TRELLIS_STORE": etcd.url})
    assert second.data_dir != first.data_dir
    la = second.client("vpc-lattice")
    got = la.get_service_network(serviceNetworkIdentifier=sn["id"])
    assert (got["id"], got["name"], got["arn"]) == (sn["id"], sn["name"], sn["arn"])
    assert la.list_tags_for_resource(resourceArn=sn["arn"])["tags"] == {"k": "v"}
    assert sn["id"] in [s["id"] for s in list_all(la, "list_service_networks")]
    la.delete_service_network(serviceNetworkIdentifier=sn["id"])


def test_installations_with_their_own_prefix_share_one_etcd(server_factory, etcd):
    a = server_factory(env={"TRELLIS_STORE": etcd.url, "TRELLIS_STORE_PREFIX": "a/"})
    b = server_factory(env={"TRELLIS_STORE": etcd.url, "TRELLIS_STORE_PREFIX": "b/"})
    sn = a.client("vpc-lattice").create_service_network(name=uname("sn"))
    assert sn["id"] in [s["id"] for s in list_all(a.client("vpc-lattice"), "list_service_networks")]
    assert sn["id"] not in [s["id"] for s in list_all(b.client("vpc-lattice"), "list_service_networks")]
    # Each has its own account root key and API token: the other's are not valid.
    assert (a.data_dir / "api-token").read_text() != (b.data_dir / "api-token").read_text()
    keys = etcd.call("/v3/kv/range", {"key": "AA==", "range_end": "AA==", "keys_only": True})["kvs"]
    prefixes = {base64.b64decode(kv["key"]).split(b"/", 1)[0] for kv in keys}
    assert prefixes == {b"a", b"b"}, f"every key under a/ or b/: {prefixes}"


class CuttableProxy:
    """A TCP proxy to a local port whose connections can all be cut at once, refusing new ones
    until resumed: a network that breaks while both ends stay up. With `delay` set, each chunk
    waits that long before it is passed on: a slow network."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusing = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket):
        try:
            while data := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.refusing = True
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def resume(self):
        self.refusing = False

    def close(self):
        self.cut()
        self.listener.close()


def test_a_watch_that_missed_a_compaction_reads_everything_afresh(server_factory, etcd):
    proxy = CuttableProxy(etcd.port)
    try:
        # A verifies signatures against the identities it watches in etcd, through the proxy.
        # Two nodes of one installation: each its own name.
        a = server_factory(env={"TRELLIS_STORE": f"etcd://127.0.0.1:{proxy.port}", "TRELLIS_REQUIRE_SIGNATURE": "1",
                                "TRELLIS_LOG": "info,trellis_store=debug", "TRELLIS_NODE": "a"})
        b = server_factory(env={"TRELLIS_STORE": etcd.url, "TRELLIS_NODE": "b"})
        iam = b.client("iam")
        user = uname("user")

        # While A is cut off, B makes a user with an access key, and etcd compacts that history.
        proxy.cut()
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        etcd.compact()
        proxy.resume()

        sts = boto3.session.Session().client(
            "sts", endpoint_url=a.endpoint, region_name=REGION, aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"], config=client_config())

        def known():
            try:
                return sts.get_caller_identity()["Arn"].endswith(f":user/{user}")
            except ClientError:
                return False

        wait_for(known, 20, message="server A to know the access key made while it was cut off")
    finally:
        proxy.close()


def test_unreachable_etcd_is_a_one_line_error(workdir):
    binary = require_binary()
    dead = f"etcd://127.0.0.1:{free_port()}"
    data_dir = tempfile.mkdtemp(prefix="data-", dir=workdir)
    proc = subprocess.run(
        [binary, "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data_dir,
         "--network", "loopback", "--store", dead],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, "a server without its store must not start"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("trellis:")]
    assert len(errors) == 1 and "cannot reach etcd at 127.0.0.1:" in errors[0], proc.stderr


def test_an_api_without_etcd_answers_each_apis_retryable_error_and_writes_nothing(server_factory, etcd):
    """Each API's own server error (500) while etcd is down, no partial write, and service again
    once etcd is back."""
    srv = server_factory(env={"TRELLIS_STORE": etcd.url})
    la = srv.client("vpc-lattice")
    kept = la.create_service_network(name=uname("sn"))["id"]
    etcd.kill()
    lost = uname("sn")
    calls = [
        ("vpc-lattice", lambda c: c.create_service_network(name=lost), "InternalServerException"),
        ("vpc-lattice", lambda c: c.list_service_networks(), "InternalServerException"),
        ("ecs", lambda c: c.create_cluster(clusterName=uname("c")), "ServerException"),
        ("ec2", lambda c: c.create_vpc(CidrBlock="10.0.0.0/16"), "InternalError"),
        ("iam", lambda c: c.create_user(UserName=uname("u")), "ServiceFailure"),
        ("acm", lambda c: c.list_certificates(), "InternalFailure"),
    ]
    for service, call, code in calls:
        with pytest.raises(ClientError) as e:
            call(srv.client(service))
        got = (e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got == (code, 500), (service, got)
    etcd.restart()

    def names():
        try:
            return [n["name"] for n in list_all(la, "list_service_networks")]
        except ClientError:
            return None

    names = wait_for(names, 20, interval=0.2, message="the API over etcd again")
    ids = [n["id"] for n in list_all(la, "list_service_networks")]
    assert kept in ids and lost not in names, (ids, names)
    assert la.create_service_network(name=uname("sn"))["id"].startswith("sn-")


def test_a_proxy_without_etcd_keeps_serving_its_last_snapshot(server_factory, etcd):
    """With etcd down the data plane goes on with what it had (targets, routes); with etcd back
    it catches up with what changed meanwhile."""
    from test_dataplane import CONFIG
    dp, tg, m, c = _serving_one_target(server_factory(config_text=CONFIG, env={"TRELLIS_STORE": etcd.url}))
    try:
        etcd.kill()
        # Bounded: 40 requests over a few seconds, every one served by the target.
        for _ in range(40):
            assert c.request("GET", "/", m["host"]).target == "a"
            time.sleep(0.05)
        etcd.restart()
        # A change made once etcd is back reaches the proxy.
        b = dp.target("b")
        wait_for(lambda: _try_register(dp, tg, b), 20, interval=0.2, message="the API over etcd again")
        served = set()
        deadline = time.monotonic() + 10
        while served != {"a", "b"} and time.monotonic() < deadline:
            served.add(c.request("GET", "/", m["host"]).target)
        assert served == {"a", "b"}, served
    finally:
        dp.close()


def _serving_one_target(server):
    """A data plane on `server` with one service forwarding to one fake target, `a`, already
    answering: (the DataPlane, the target group's ID, the mesh, a client in its VPC)."""
    from test_dataplane import DataPlane, forward
    dp = DataPlane(server)
    try:
        vpc = dp.res.vpc()
        tg = dp.tg(vpc)["id"]
        dp.register(tg, dp.target("a"))
        m = dp.mesh(forward(tg), vpc=vpc)
        c = dp.client(vpc)
        dp.wait_serving(c, m["host"], "a")
        return dp, tg, m, c
    except BaseException:
        dp.close()
        raise


def _try_register(dp, tg, target) -> bool:
    try:
        dp.register(tg, target)
        return True
    except ClientError:
        return False


def test_signatures_that_cannot_be_checked_without_etcd_get_a_retryable_server_error(server_factory, etcd):
    """Under --require-signature, a signed call whose key cannot be read (etcd down) gets the
    service's own 500, which clients retry, not a refusal of the signature."""
    import json
    import urllib.request
    srv = server_factory(env={"TRELLIS_STORE": etcd.url, "TRELLIS_REQUIRE_SIGNATURE": "1"})
    token = (srv.data_dir / "api-token").read_text().strip()
    req = urllib.request.Request(f"{srv.endpoint}/_trellis/credentials", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
        creds = json.loads(r.read())
    session = boto3.session.Session(aws_access_key_id=creds["accessKeyId"],
                                    aws_secret_access_key=creds["secretAccessKey"], region_name=REGION)
    client = lambda service: session.client(service, endpoint_url=srv.endpoint, config=client_config())
    client("vpc-lattice").list_service_networks()
    etcd.kill()
    for service, call, code in [
        ("vpc-lattice", lambda c: c.list_service_networks(), "InternalServerException"),
        ("ecs", lambda c: c.list_clusters(), "ServerException"),
        ("ec2", lambda c: c.describe_vpcs(), "InternalError"),
        ("iam", lambda c: c.list_users(), "ServiceFailure"),
    ]:
        with pytest.raises(ClientError) as e:
            call(client(service))
        got = (e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got == (code, 500), (service, got)


def test_a_slow_store_slows_the_api_not_the_data_plane(server_factory, etcd):
    """etcd behind a link that holds every chunk 150 ms each way: API writes take longer but
    each one acknowledged is there, the data plane serves every request at its usual latency
    from its snapshot, and a change still reaches it."""
    import statistics

    from test_dataplane import CONFIG
    link = CuttableProxy(etcd.port)
    dp, tg, m, c = _serving_one_target(
        server_factory(config_text=CONFIG, env={"TRELLIS_STORE": f"etcd://127.0.0.1:{link.port}"}))
    try:

        def latencies(n):
            out = []
            for _ in range(n):
                t = time.monotonic()
                assert c.request("GET", "/", m["host"]).status == 200
                out.append(time.monotonic() - t)
            return out
        latencies(10)
        before = statistics.median(latencies(40))
        t = time.monotonic()
        dp.lattice.create_service_network(name=uname("fast"))
        fast_write = time.monotonic() - t

        link.delay = 0.15
        lattice = dp.server.client("vpc-lattice")
        written, write_times = [], []
        during = []
        for i in range(5):
            t = time.monotonic()
            name = uname(f"slow-{i}")
            lattice.create_service_network(name=name)
            write_times.append(time.monotonic() - t)
            written.append(name)
            during += latencies(20)
        # A change made while the store is slow reaches the data plane.
        b = dp.target("b")
        t = time.monotonic()
        dp.register(tg, b)
        served = set()
        while served != {"a", "b"} and time.monotonic() - t < 30:
            served.add(c.request("GET", "/", m["host"]).target)
        propagated = time.monotonic() - t
        link.delay = 0.0
        names = {s["name"] for s in list_all(lattice, "list_service_networks")}
        median = statistics.median(during)
        print(f"\nslow store (150 ms a chunk each way): a write took {statistics.median(write_times):.2f}s "
              f"(before {fast_write:.3f}s); {len(during)} data-plane requests, median {median * 1000:.1f} ms "
              f"(before {before * 1000:.1f} ms), max {max(during) * 1000:.1f} ms; a new target served after "
              f"{propagated:.1f}s")
        assert served == {"a", "b"}, served
        assert [n for n in written if n not in names] == []
        assert median < max(5 * before, 0.05), (median, before)
        assert min(write_times) > 0.15, "the link must have slowed the store"
    finally:
        dp.close()
        link.close()
