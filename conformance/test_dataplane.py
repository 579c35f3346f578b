"""The data plane in loopback mode, black-box: traffic configured through boto3 goes through the
real proxy of a real `trellis serve` to fake targets started here (threaded `http.server`s on
127.0.0.1 that answer with their own name and echo the request headers they received).

Each test starts its own server (through `server_factory`) with `relaxed_health_checks = true`
and a 2 s deregistration delay, builds its own VPCs, service network, service and targets, and
reaches the service the way a client in the VPC would: at the VPC's ingress address
(`GET /_trellis/vpcs/<vpc>/ingress`), on the listener's port (plus `lowPortOffset` for ports
below 1024 when the server is not root), with the service's generated name as `Host`.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support import ACCOUNT, PARTITION_LABEL, REGION, Factory, fixed, forward, wait_for

DEREGISTRATION_DELAY = 2
CONFIG = f"""relaxed_health_checks = true

[proxy]
deregistration_delay_seconds = {DEREGISTRATION_DELAY}
"""
# How long the proxy may take to apply a configuration change made through the API.
PROPAGATION = 1.0
# Generous bound on health-status transitions (checks every 1 s).
HEALTH_BOUND = 15.0
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
FAST_CHECKS = {
    "enabled": True,
    "protocol": "HTTP",
    "path": "/healthz",
    "healthCheckIntervalSeconds": 1,
    "healthCheckTimeoutSeconds": 1,
    "healthyThresholdCount": 2,
    "unhealthyThresholdCount": 2,
    "matcher": {"httpCode": "200"},
}


# --------------------------------------------------------------------------------------------
# Fake targets
# --------------------------------------------------------------------------------------------


class _TargetHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection from the proxy is dropped after this
    # Head and body are two writes: without TCP_NODELAY, Nagle holds the body back until the
    # proxy's delayed ACK of the head (40 ms a response).
    disable_nagle_algorithm = True

    def _serve(self):
        target: FakeTarget = self.server.target  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        pairs = [[k, v] for k, v in self.headers.items()]
        proxied = self.headers.get("x-amzn-requestid") is not None
        path = self.path
        target.record(proxied, self.command, path, pairs)
        status = 200
        if path.startswith("/slow"):
            target.slow_started.set()
            target.release.wait(float(path.rsplit("/", 1)[-1]) if path.count("/") > 1 else 4.0)
        if path.startswith("/healthz"):
            # A probe may be held until the test has looked at the target's first status.
            target.probe_gate.wait(5)
            status = 200 if target.healthy else 500
        body = json.dumps({"target": target.name, "method": self.command, "path": path,
                           "headers": pairs}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if target.stopped:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, *args):
        pass


class _TargetServer(ThreadingHTTPServer):
    # Room for many connections at once (the default backlog of 5 makes a burst of connects
    # wait for SYN retries).
    request_queue_size = 512


class FakeTarget:
    """An HTTP server on 127.0.0.1:<free port> that answers every request with its name and the
    headers it received. `/healthz` answers 200 or 500 as `healthy` says; `/slow/<seconds>` holds
    the answer (until `release` is set, at most that long)."""

    def __init__(self, name: str):
        self.name = name
        self.healthy = True
        self.stopped = False
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # proxied requests (they carry x-amzn-requestid)
        self.probes = 0  # health checks (they do not)
        self.slow_started = threading.Event()
        self.release = threading.Event()
        self.probe_gate = threading.Event()
        self.probe_gate.set()
        self.server = _TargetServer(("127.0.0.1", 0), _TargetHandler)
        self.server.daemon_threads = True
        self.server.target = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True, name=f"target-{name}")
        self.thread.start()

    def record(self, proxied: bool, method: str, path: str, headers: list):
        with self.lock:
            if proxied:
                self.requests.append({"at": time.monotonic(), "method": method, "path": path,
                                      "headers": headers})
            else:
                self.probes += 1

    def proxied_since(self, t: float, path_prefix: str = "") -> list:
        with self.lock:
            return [r for r in self.requests if r["at"] >= t and r["path"].startswith(path_prefix)]

    def stop(self):
        self.stopped = True
        self.release.set()
        self.probe_gate.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# A client inside a VPC
# --------------------------------------------------------------------------------------------


class Resp:
    def __init__(self, status: int, headers: list, body: bytes):
        self.status = status
        self.header_list = headers
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    @property
    def doc(self) -> dict | None:
        try:
            d = json.loads(self.body)
        except ValueError:
            return None
        return d if isinstance(d, dict) else None

    @property
    def target(self) -> str | None:
        d = self.doc
        return d.get("target") if d else None

    def seen(self, name: str) -> list:
        """Every value of header `name` as the target received it."""
        d = self.doc or {}
        return [v for k, v in d.get("headers", []) if k.lower() == name.lower()]

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:300]!r}>"


class VpcClient:
    """One keep-alive HTTP/1.1 connection to a VPC's ingress address on one Lattice port."""

    def __init__(self, address: str, port: int, timeout: float = 10):
        self.address, self.port, self.timeout = address, port, timeout
        self.conn = http.client.HTTPConnection(address, port, timeout=timeout)

    def request(self, method: str, path: str, host: str, headers=None, body: bytes | None = None) -> Resp:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        try:
            self.conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            self.conn.putheader("Host", host)
            for k, v in pairs:
                self.conn.putheader(k, v)
            if body is not None or method in ("POST", "PUT", "PATCH"):
                self.conn.putheader("Content-Length", str(len(body or b"")))
            self.conn.endheaders(body)
            r = self.conn.getresponse()
            data = r.read()
            return Resp(r.status, r.getheaders(), data)
        except Exception:
            self.conn.close()
            raise

    def local_ip(self) -> str | None:
        return self.conn.sock.getsockname()[0] if self.conn.sock else None

    def close(self):
        self.conn.close()


# --------------------------------------------------------------------------------------------
# DNS, by hand
# --------------------------------------------------------------------------------------------

RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 3, 5
TYPE_A, TYPE_AAAA = 1, 28


def _dns_name(data: bytes, off: int) -> int:
    """Skips a (possibly compressed) name; returns the offset after it."""
    while True:
        n = data[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        if n == 0:
            return off + 1
        off += 1 + n


def dns_query(server: str, port: int, name: str, qtype: int = TYPE_A, tcp: bool = False, timeout: float = 2):
    """One question to `server`; returns (rcode, flags, [(type, ttl, rdata)]) with A rdata as text."""
    qid = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + b"\0" + struct.pack(">HH", qtype, 1)
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack(">H", len(query)) + query)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(4096)
                assert chunk, "DNS over TCP: connection closed before the whole answer"
                buf += chunk
            data = buf[2:2 + struct.unpack(">H", buf[:2])[0]]
    else:
        data = None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            for _ in range(3):
                s.sendto(query, (server, port))
                try:
                    data, _ = s.recvfrom(4096)
                    break
                except socket.timeout:
                    continue
        assert data is not None, f"no DNS answer from {server}:{port} for {name}"
    rid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", data[:12])
    assert rid == qid, "DNS answer with another id"
    assert flags & 0x8000, "DNS answer is not a response"
    off = 12
    for _ in range(qd):
        off = _dns_name(data, off) + 4
    answers = []
    for _ in range(an):
        off = _dns_name(data, off)
        rtype, _rclass, ttl, rdlen = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        rdata = data[off:off + rdlen]
        off += rdlen
        answers.append((rtype, ttl, socket.inet_ntoa(rdata) if rtype == TYPE_A and rdlen == 4 else rdata))
    return flags & 0xF, flags, answers


# --------------------------------------------------------------------------------------------
# One server with its data plane, per test
# --------------------------------------------------------------------------------------------


class DataPlane:
    def __init__(self, server):
        self.server = server
        self.endpoint = server.endpoint
        self.lattice = server.client("vpc-lattice")
        self.ec2 = server.client("ec2")
        self.res = Factory(self.lattice, self.ec2)
        self.targets: list[FakeTarget] = []
        self.clients: list[VpcClient] = []

    # ---- fakes and clients
    def target(self, name: str) -> FakeTarget:
        t = FakeTarget(name)
        self.targets.append(t)
        return t

    def client(self, vpc: str, port: int = 80) -> VpcClient:
        info = self.ingress(vpc)
        c = VpcClient(info["address"], self.real_port(info, port))
        self.clients.append(c)
        return c

    @staticmethod
    def real_port(info: dict, port: int) -> int:
        return port + info["lowPortOffset"] if port < 1024 else port

    # ---- the ingress endpoint
    def ingress_raw(self, vpc: str) -> tuple[int, dict]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.endpoint}/_trellis/vpcs/{vpc}/ingress", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def ingress(self, vpc: str, timeout: float = 5) -> dict:
        """The VPC's ingress answer, once it has one (addresses are allocated asynchronously)."""
        def found():
            status, doc = self.ingress_raw(vpc)
            return doc if status == 200 else None
        return wait_for(found, timeout, message=f"an ingress address for {vpc}")

    # ---- configuration
    def tg(self, vpc: str, name: str | None = None, health: dict | None = None, port: int = 8080) -> dict:
        config = {"port": port, "protocol": "HTTP", "vpcIdentifier": vpc}
        if health is not None:
            config["healthCheck"] = health
        kw = {"name": name} if name else {}
        return self.res.tg(vpc=vpc, config=config, **kw)

    def register(self, tg_id: str, *targets):
        """Registers FakeTargets (on their ports) and (ip, port) pairs."""
        items = []
        for t in targets:
            if isinstance(t, FakeTarget):
                items.append({"id": "127.0.0.1", "port": t.port})
            else:
                items.append({"id": t[0], "port": t[1]})
        r = self.lattice.register_targets(targetGroupIdentifier=tg_id, targets=items)
        assert not r.get("unsuccessful"), r
        return r

    def mesh(self, default_action: dict, vpc: str | None = None, port: int = 80, vpcs: int = 1) -> dict:
        """VPC(s) (the first may be given) + service network + service with one HTTP listener on
        `port`, all associated."""
        vpc_ids = ([vpc] if vpc else []) + [self.res.vpc() for _ in range(vpcs - (1 if vpc else 0))]
        sn = self.res.sn()
        svc = self.res.service()
        listener = self.res.listener(svc["id"], port=port, defaultAction=default_action)
        self.res.snsa(sn["id"], svc["id"])
        for v in vpc_ids:
            self.res.snva(sn["id"], v)
        host = self.lattice.get_service(serviceIdentifier=svc["id"])["dnsEntry"]["domainName"]
        return {"vpc": vpc_ids[0], "vpcs": vpc_ids, "sn": sn, "svc": svc, "listener": listener,
                "host": host, "port": port}

    def serving_app(self) -> tuple[dict, VpcClient]:
        """A VPC, a service on HTTP:80 forwarding to one fake target named `app`, and a client in
        the VPC it already answered."""
        target = self.target("app")
        vpc = self.res.vpc()
        tg = self.tg(vpc)["id"]
        self.register(tg, target)
        m = self.mesh(forward(tg), vpc=vpc)
        client = self.client(vpc)
        self.wait_serving(client, m["host"], "app")
        return m, client

    def wait_serving(self, client: VpcClient, host: str, want, path: str = "/", timeout: float = 5,
                     **kw) -> Resp:
        """Polls until a request gets `want` (a target name, or a status for proxy answers)."""
        def attempt():
            try:
                r = client.request("GET", path, host, **kw)
            except (OSError, http.client.HTTPException):
                return None
            ok = r.target == want if isinstance(want, str) else r.status == want
            return r if ok else None
        return wait_for(attempt, timeout, interval=0.05, message=f"GET {path} at {host} to reach {want}")

    def targets_of(self, tg_id: str) -> dict:
        items = self.lattice.list_targets(targetGroupIdentifier=tg_id)["items"]
        return {(t["id"], t.get("port")): t for t in items}

    def close(self):
        for c in self.clients:
            c.close()
        for t in self.targets:
            t.stop()


@pytest.fixture
def dp(server_factory):
    server = server_factory(config_text=CONFIG)
    plane = DataPlane(server)
    yield plane
    plane.close()


def vpc_arn(vpc: str) -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/{vpc}"


def header(match_type: str, name: str, value: str, case_sensitive: bool | None = None) -> dict:
    h = {"name": name, "match": {match_type: value}}
    if case_sensitive is not None:
        h["caseSensitive"] = case_sensitive
    return h


# --------------------------------------------------------------------------------------------
# 1. Routing
# --------------------------------------------------------------------------------------------


def test_rules_route_to_the_right_target(dp):
    vpc = dp.res.vpc()
    names = ("default", "a", "b", "c")
    fakes = {n: dp.target(n) for n in names}
    tgs = {n: dp.tg(vpc)["id"] for n in names}
    for n in names:
        dp.register(tgs[n], fakes[n])
    m = dp.mesh(forward(tgs["default"]), vpc=vpc)
    svc_id, listener_id, host = m["svc"]["id"], m["listener"]["id"], m["host"]

    def rule(priority, action, method=None, path=None, headers=None):
        match = {}
        if method:
            match["method"] = method
        if path:
            match["pathMatch"] = path
        if headers:
            match["headerMatches"] = headers
        dp.res.rule(svc_id, listener_id, priority, match={"httpMatch": match}, action=action)

    # Created out of priority order: evaluation follows priority, not creation.
    rule(20, forward(tgs["c"]), path={"match": {"prefix": "/shadow/deep"}})
    rule(10, forward(tgs["b"]), path={"match": {"prefix": "/shadow"}})
    rule(1, fixed(500), headers=[header("exact", "x-route", "boom")])
    rule(2, forward(tgs["a"]), path={"match": {"prefix": "/api"}})
    rule(3, forward(tgs["b"]), path={"match": {"exact": "/Exact/Path"}, "caseSensitive": False})
    rule(4, forward(tgs["c"]), method="DELETE")
    rule(5, forward(tgs["a"]), headers=[header("exact", "x-tier", "gold")])
    rule(6, forward(tgs["b"]), headers=[header("prefix", "x-client", "mobile-", case_sensitive=True)])
    rule(7, fixed(404), headers=[header("contains", "x-trace", "crawl")])

    c = dp.client(vpc)
    # The last rule created routes: the whole configuration has reached the proxy.
    dp.wait_serving(c, host, 404, headers={"x-trace": "a-crawler"})

    cases = [
        # (method, path, headers, want: target name or proxy status)
        ("GET", "/", {}, "default"),
        ("GET", "/api", {}, "a"),
        ("GET", "/api/v1/x?q=1", {}, "a"),
        ("GET", "/apix", {}, "a"),                      # a plain string prefix
        ("GET", "/API/x", {}, "default"),               # prefixes are case-sensitive by default
        ("GET", "/exact/path", {}, "b"),                # exact, case-insensitive as asked
        ("GET", "/EXACT/PATH?x=1", {}, "b"),            # the query string is not part of the path
        ("GET", "/exact/path/more", {}, "default"),     # exact is exact
        ("DELETE", "/anything", {}, "c"),
        ("POST", "/anything", {}, "default"),
        ("DELETE", "/api/x", {}, "a"),                  # priority 2 before priority 4
        ("GET", "/", {"x-tier": "GOLD"}, "a"),          # header values case-insensitive by default
        ("GET", "/", {"x-tier": "golden"}, "default"),  # exact is exact
        ("GET", "/", {"X-Client": "mobile-ios"}, "b"),  # header names case-insensitive
        ("GET", "/", {"x-client": "Mobile-ios"}, "default"),  # caseSensitive prefix
        ("GET", "/", {"x-trace": "abc-CRAWLER-1"}, 404),  # contains, case-insensitive: fixed 404
        ("GET", "/api/x", {"x-route": "boom"}, 500),    # priority 1 (fixed 500) before priority 2
        ("GET", "/shadow/deep/x", {}, "b"),             # priority 10 before 20, though created later
        ("GET", "/shadow", {}, "b"),
    ]
    failures = []
    for method, path, hdrs, want in cases:
        r = c.request(method, path, host, headers=hdrs)
        if isinstance(want, str):
            ok = r.status == 200 and r.target == want
        else:
            ok = r.status == want and r.target is None
        if not ok:
            failures.append(f"{method} {path} {hdrs}: want {want}, got {r!r}")
        if isinstance(want, int):
            assert r.headers.get("x-amzn-requestid"), f"fixed {want} carries no x-amzn-requestid"
    assert not failures, "routing mismatches:\n" + "\n".join(failures)
    # The targets saw only what was routed to them (no stray copies).
    assert [r["path"] for r in fakes["c"].requests] == ["/anything"], fakes["c"].requests


def test_listener_default_fixed_response(dp):
    m = dp.mesh(fixed(404))
    c = dp.client(m["vpc"])
    r = dp.wait_serving(c, m["host"], 404, path="/whatever")
    assert r.target is None and r.headers.get("x-amzn-requestid")
    dp.lattice.update_listener(serviceIdentifier=m["svc"]["id"], listenerIdentifier=m["listener"]["id"],
                               defaultAction=fixed(500))
    r = dp.wait_serving(c, m["host"], 500, path="/whatever")
    assert r.target is None


def test_weighted_target_groups_3_to_1(dp):
    vpc = dp.res.vpc()
    heavy, light = dp.target("heavy"), dp.target("light")
    tg_heavy, tg_light = dp.tg(vpc)["id"], dp.tg(vpc)["id"]
    dp.register(tg_heavy, heavy)
    dp.register(tg_light, light)
    m = dp.mesh(forward(tg_heavy, tg_light, weights=[3, 1]), vpc=vpc)
    c = dp.client(vpc)
    dp.wait_serving(c, m["host"], "heavy")
    dp.wait_serving(c, m["host"], "light")

    n = 2000
    counts = {"heavy": 0, "light": 0}
    for _ in range(n):
        r = c.request("GET", "/w", m["host"])
        assert r.status == 200, r
        counts[r.target] += 1
    # Expected 1500:500. The heavy group's count within ±5% of 1500 (±75, about 3.9 standard
    # deviations of a fair 3:1 split), hence the light group's within 500 ± 75.
    assert abs(counts["heavy"] - 0.75 * n) <= 0.05 * 0.75 * n, counts
    assert counts["heavy"] + counts["light"] == n


# --------------------------------------------------------------------------------------------
# 2. What the target sees
# --------------------------------------------------------------------------------------------


def test_headers_the_target_sees(dp):
    vpc = dp.res.vpc()
    t = dp.target("t")
    tg = dp.tg(vpc)
    dp.register(tg["id"], t)
    m = dp.mesh(forward(tg["id"]), vpc=vpc)
    c = dp.client(vpc)
    dp.wait_serving(c, m["host"], "t")

    r = c.request("GET", "/h?x=1", m["host"], headers=[
        ("x-forwarded-for", "203.0.113.7"),
        ("x-amzn-lattice-identity", "Principal=forged"),
        ("X-Amzn-Lattice-Network", "SourceVpcArn=forged"),
        ("x-amzn-lattice-target", "forged"),
        ("x-amzn-requestid", "forged"),
        ("x-custom", "kept"),
    ])
    assert r.status == 200 and r.target == "t", r
    client_ip = c.local_ip()
    doc = r.doc
    assert doc["path"] == "/h?x=1" and doc["method"] == "GET"
    assert r.seen("host") == [m["host"]], "Host must reach the target unchanged"
    assert r.seen("x-forwarded-for") == [f"203.0.113.7, {client_ip}"], r.seen("x-forwarded-for")
    assert r.seen("x-forwarded-port") == ["80"], "x-forwarded-port is the Lattice listener port"
    assert r.seen("x-forwarded-proto") == ["http"]
    assert r.seen("x-amzn-lattice-network") == [f"SourceVpcArn={vpc_arn(vpc)}"]
    assert r.seen("x-amzn-lattice-target") == [
        f"ServiceArn={m['svc']['arn']};ServiceNetworkArn={m['sn']['arn']};TargetGroupArn={tg['arn']}"]
    ids = r.seen("x-amzn-requestid")
    assert len(ids) == 1 and UUID_RE.match(ids[0]), ids
    assert r.headers.get("x-amzn-requestid") == ids[0], "client and target see the same request id"
    assert r.seen("x-amzn-lattice-identity") == [], "incoming x-amzn-lattice-* must be stripped"
    assert r.seen("x-custom") == ["kept"]

    # Without an incoming x-forwarded-for, it is the client's address alone; ids are per request.
    r2 = c.request("POST", "/h", m["host"], body=b"{}")
    assert r2.seen("x-forwarded-for") == [client_ip]
    assert r2.seen("x-amzn-requestid") != ids
    # A Host with the port, as clients send it for a port other than 80, is kept as sent too.
    r3 = c.request("GET", "/", f"{m['host']}:80")
    assert r3.status == 200 and r3.seen("host") == [f"{m['host']}:80"]


# --------------------------------------------------------------------------------------------
# 3. Errors the proxy makes
# --------------------------------------------------------------------------------------------


def _assert_proxy_error(r: Resp, status: int):
    assert r.status == status, r
    assert r.target is None, f"a proxy-made {status} must not come from a target: {r!r}"
    rid = r.headers.get("x-amzn-requestid")
    assert rid and UUID_RE.match(rid), r.headers
    assert rid in r.body.decode(errors="replace"), f"the {status} body does not name the request id {rid}: {r!r}"


def test_proxy_errors_503_502_404(dp):
    vpc = dp.res.vpc()
    empty = dp.tg(vpc)["id"]
    dead = dp.tg(vpc)["id"]
    dp.register(dead, ("127.0.0.1", closed_port()))
    m = dp.mesh(forward(empty), vpc=vpc)
    dp.res.rule(m["svc"]["id"], m["listener"]["id"], 1, tg_id=dead, prefix="/refused")
    c = dp.client(vpc)
    dp.wait_serving(c, m["host"], 502, path="/refused")

    _assert_proxy_error(c.request("GET", "/", m["host"]), 503)
    _assert_proxy_error(c.request("GET", "/refused/x", m["host"]), 502)
    _assert_proxy_error(c.request("GET", "/", "unknown-service.example.com"), 404)
    # The connection survives a 404 for an unknown host: the next request goes on the same one.
    sock = c.conn.sock
    assert sock is not None, "the proxy closed the connection after a 404 for an unknown host"
    _assert_proxy_error(c.request("GET", "/refused", m["host"]), 502)
    assert c.conn.sock is sock


# --------------------------------------------------------------------------------------------
# 4. Health
# --------------------------------------------------------------------------------------------


def test_health_initial_healthy_unhealthy_healthy(dp):
    vpc = dp.res.vpc()
    t = dp.target("flappy")
    tg = dp.tg(vpc, health=FAST_CHECKS)["id"]
    m = dp.mesh(forward(tg), vpc=vpc)
    key = ("127.0.0.1", t.port)

    # Probes wait at the target until the first status has been read, so INITIAL is observable.
    t.probe_gate.clear()
    dp.register(tg, t)
    first = dp.targets_of(tg)[key]
    t.probe_gate.set()
    assert first["status"] == "INITIAL", first
    assert "reasonCode" not in first, first

    def status_is(want, reason=None):
        def check():
            got = dp.targets_of(tg).get(key)
            ok = got and got["status"] == want and (reason is None or got.get("reasonCode") == reason)
            return got if ok else None
        return check

    t0 = time.monotonic()
    wait_for(status_is("HEALTHY"), HEALTH_BOUND, interval=0.1, message="INITIAL -> HEALTHY")
    t.healthy = False
    got = wait_for(status_is("UNHEALTHY"), HEALTH_BOUND, interval=0.1, message="HEALTHY -> UNHEALTHY")
    assert got.get("reasonCode"), f"an UNHEALTHY target carries a reasonCode: {got}"
    t.healthy = True
    got = wait_for(status_is("HEALTHY"), HEALTH_BOUND, interval=0.1, message="UNHEALTHY -> HEALTHY")
    assert "reasonCode" not in got, got
    assert t.probes >= 4, f"the target saw {t.probes} health checks"
    assert time.monotonic() - t0 < 3 * HEALTH_BOUND


def test_health_unused_and_unavailable(dp):
    vpc = dp.res.vpc()
    local = dp.target("local")
    idle = dp.target("idle")
    used_tg = dp.tg(vpc, health=FAST_CHECKS)["id"]
    unused_tg = dp.tg(vpc, health=FAST_CHECKS)["id"]
    dp.register(used_tg, local, ("10.0.1.23", 8080))
    dp.register(unused_tg, idle)
    m = dp.mesh(forward(used_tg), vpc=vpc)

    def unavailable():
        got = dp.targets_of(used_tg).get(("10.0.1.23", 8080))
        return got if got and got["status"] == "UNAVAILABLE" else None
    got = wait_for(unavailable, HEALTH_BOUND, interval=0.1, message="10.0.1.23 to show UNAVAILABLE")
    assert got.get("reasonCode"), got
    wait_for(lambda: dp.targets_of(used_tg)[("127.0.0.1", local.port)]["status"] == "HEALTHY",
             HEALTH_BOUND, interval=0.1, message="the loopback target to become HEALTHY")

    unused = dp.targets_of(unused_tg)[("127.0.0.1", idle.port)]
    assert unused["status"] == "UNUSED" and unused.get("reasonCode") == "TargetGroupNotInUse", unused
    # ... and stays so: its group is not probed.
    time.sleep(1.5)
    assert dp.targets_of(unused_tg)[("127.0.0.1", idle.port)]["status"] == "UNUSED"
    assert idle.probes == 0 and idle.requests == []

    c = dp.client(vpc)
    dp.wait_serving(c, m["host"], "local")
    for _ in range(50):
        r = c.request("GET", "/", m["host"])
        assert r.status == 200 and r.target == "local", f"a request did not reach the loopback target: {r!r}"
    # Not even when failing open: with the loopback target UNHEALTHY, requests still go to it alone.
    local.healthy = False
    wait_for(lambda: dp.targets_of(used_tg)[("127.0.0.1", local.port)]["status"] == "UNHEALTHY",
             HEALTH_BOUND, interval=0.1, message="the loopback target to become UNHEALTHY")
    for _ in range(50):
        r = c.request("GET", "/", m["host"])
        assert r.status == 200 and r.target == "local", f"fail-open did not keep to the loopback target: {r!r}"
    assert dp.targets_of(used_tg)[("10.0.1.23", 8080)]["status"] == "UNAVAILABLE"


# --------------------------------------------------------------------------------------------
# 5. Draining
# --------------------------------------------------------------------------------------------


def test_deregistered_target_drains_then_goes(dp):
    vpc = dp.res.vpc()
    a, b = dp.target("a"), dp.target("b")
    tg = dp.tg(vpc, health=FAST_CHECKS)["id"]
    dp.register(tg, a, b)
    m = dp.mesh(forward(tg), vpc=vpc)
    c = dp.client(vpc)
    dp.wait_serving(c, m["host"], "a")
    dp.wait_serving(c, m["host"], "b")

    # A slow request in flight on one target outlives the deregistration delay.
    slow_result = {}

    def slow():
        sc = VpcClient(c.address, c.port, timeout=15)
        try:
            slow_result["resp"] = sc.request("GET", "/slow/6", m["host"])
        except Exception as e:  # the proxy may cut it at the drain deadline
            slow_result["error"] = e
        finally:
            sc.close()

    th = threading.Thread(target=slow, daemon=True)
    th.start()
    wait_for(lambda: a.slow_started.is_set() or b.slow_started.is_set(), 5, message="the slow request to start")
    gone, stays = (a, b) if a.slow_started.is_set() else (b, a)
    key = ("127.0.0.1", gone.port)

    t0 = time.monotonic()
    dp.lattice.deregister_targets(targetGroupIdentifier=tg, targets=[{"id": "127.0.0.1", "port": gone.port}])
    now = dp.targets_of(tg)
    assert now[key]["status"] == "DRAINING", now[key]
    assert now[key].get("reasonCode") == "DeregistrationInProgress", now[key]
    assert now[("127.0.0.1", stays.port)]["status"] != "DRAINING"

    # Meanwhile every new request goes to the other target.
    seen_draining = False
    answered = {"a": 0, "b": 0}
    while True:
        r = c.request("GET", "/after", m["host"])
        assert r.status == 200, r
        answered[r.target] += 1
        targets = dp.targets_of(tg)
        if key not in targets:
            break
        seen_draining = seen_draining or targets[key]["status"] == "DRAINING"
        assert time.monotonic() - t0 < DEREGISTRATION_DELAY + 3, (
            f"the deregistered target is still listed {time.monotonic() - t0:.1f}s after deregistration "
            f"(delay {DEREGISTRATION_DELAY}s): {targets[key]}")
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    assert seen_draining
    late = gone.proxied_since(t0 + PROPAGATION, "/after")
    assert late == [], f"{len(late)} new requests reached the draining target after {PROPAGATION}s"
    assert answered[stays.name] > 0
    # It went when the delay ran out, not when the slow request finished (6 s).
    assert elapsed < 6, elapsed
    for _ in range(20):
        r = c.request("GET", "/after", m["host"])
        assert r.status == 200 and r.target == stays.name, r
    gone.release.set()
    th.join(10)
    assert not th.is_alive()


# --------------------------------------------------------------------------------------------
# 6. Live configuration
# --------------------------------------------------------------------------------------------


def test_live_changes_without_failed_requests(dp):
    vpc = dp.res.vpc()
    old, new, ruled = dp.target("old"), dp.target("new"), dp.target("ruled")
    tgs = {}
    for t in (old, new, ruled):
        tgs[t.name] = dp.tg(vpc)["id"]
        dp.register(tgs[t.name], t)
    m = dp.mesh(forward(tgs["old"]), vpc=vpc)
    c = dp.client(vpc)
    dp.wait_serving(c, m["host"], "old")

    log = []  # (sent at, path, status or exception, target)
    stop = threading.Event()

    def load():
        i = 0
        deadline = time.monotonic() + 3.0
        while not stop.is_set() and time.monotonic() < deadline:
            path = "/new/x" if i % 2 else "/plain"
            i += 1
            at = time.monotonic()
            try:
                r = c.request("GET", path, m["host"])
                log.append((at, path, r.status, r.target))
            except Exception as e:
                log.append((at, path, repr(e), None))

    th = threading.Thread(target=load, daemon=True)
    th.start()
    time.sleep(0.7)
    dp.lattice.update_listener(serviceIdentifier=m["svc"]["id"], listenerIdentifier=m["listener"]["id"],
                               defaultAction=forward(tgs["new"]))
    t_default = time.monotonic()
    time.sleep(0.5)
    dp.res.rule(m["svc"]["id"], m["listener"]["id"], 1, tg_id=tgs["ruled"], prefix="/new")
    t_rule = time.monotonic()
    th.join(5)
    stop.set()
    assert not th.is_alive()

    failed = [e for e in log if e[2] != 200]
    assert not failed, f"{len(failed)} of {len(log)} requests failed during live changes: {failed[:5]}"
    plain = [e for e in log if e[1] == "/plain"]
    newp = [e for e in log if e[1] == "/new/x"]
    assert all(e[3] == "old" for e in plain if e[0] < t_default - 0.3), "before the change: the old default"
    late_plain = [e for e in plain if e[0] >= t_default + PROPAGATION]
    assert late_plain and all(e[3] == "new" for e in late_plain), (
        "new default action not in effect within 1 s: "
        f"{[e for e in late_plain if e[3] != 'new'][:3]}")
    late_new = [e for e in newp if e[0] >= t_rule + PROPAGATION]
    assert late_new and all(e[3] == "ruled" for e in late_new), (
        f"new rule not in effect within 1 s: {[e for e in late_new if e[3] != 'ruled'][:3]}")
    first_new = min((e[0] for e in plain if e[3] == "new"), default=None)
    first_ruled = min((e[0] for e in newp if e[3] == "ruled"), default=None)
    print(f"\nlive changes: {len(log)} requests; default switched after "
          f"{(first_new - t_default) * 1000:.0f} ms, rule after {(first_ruled - t_rule) * 1000:.0f} ms")


# --------------------------------------------------------------------------------------------
# 7. DNS and ingress addresses
# --------------------------------------------------------------------------------------------


def _trellis_vpc_ingress(dp, vpc: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    return subprocess.run([dp.server.bin, "vpc", "ingress", vpc, "--endpoint", dp.endpoint],
                          capture_output=True, text=True, timeout=15, env=env, stdin=subprocess.DEVNULL)


def test_dns_and_ingress_per_vpc(dp):
    t = dp.target("t")
    m = dp.mesh(fixed(404), vpcs=2)
    tg = dp.tg(m["vpc"])["id"]
    dp.register(tg, t)
    dp.lattice.update_listener(serviceIdentifier=m["svc"]["id"], listenerIdentifier=m["listener"]["id"],
                               defaultAction=forward(tg))
    lonely = dp.res.vpc()
    vpc1, vpc2 = m["vpcs"]
    host = m["host"]
    assert host.endswith(f".{PARTITION_LABEL}.vpc-lattice-svcs.{REGION}.on.aws"), host

    in1, in2 = dp.ingress(vpc1), dp.ingress(vpc2)
    assert in1["address"] != in2["address"], "each VPC has its own ingress address"
    for info in (in1, in2):
        assert info["address"].startswith("127."), info
        assert 80 in info["listenerPorts"], info
        assert info["dnsPort"] == 53 + info["lowPortOffset"], info

    # The CLI prints the same address.
    out = _trellis_vpc_ingress(dp, vpc1)
    assert out.returncode == 0 and out.stdout.strip() == in1["address"], (out.returncode, out.stdout, out.stderr)

    # A VPC in no service network has no ingress address.
    status, doc = dp.ingress_raw(lonely)
    assert status == 404, (status, doc)
    out = _trellis_vpc_ingress(dp, lonely)
    assert out.returncode != 0, (out.returncode, out.stdout, out.stderr)

    # Each VPC's DNS resolves the service's name to that VPC's own ingress address.
    for info in (in1, in2):
        addr, port = info["address"], info["dnsPort"]
        rcode, flags, answers = wait_for(
            lambda: (lambda a: a if a[0] == RCODE_NOERROR and a[2] else None)(dns_query(addr, port, host)),
            5, interval=0.1, message=f"{host} to resolve at {addr}")
        assert [(ty, ip) for ty, _ttl, ip in answers] == [(TYPE_A, addr)], answers
        assert flags & 0x0400, "the answer is authoritative"
        # Names are case-insensitive, and TCP answers too.
        rcode, _, answers = dns_query(addr, port, host.upper(), tcp=True)
        assert rcode == RCODE_NOERROR and [a[2] for a in answers] == [addr]
        # An unknown name under the Lattice zone does not exist; the rest of the world is refused.
        unknown = f"nope-0123456789abcdef0.{PARTITION_LABEL}.vpc-lattice-svcs.{REGION}.on.aws"
        rcode, _, answers = dns_query(addr, port, unknown)
        assert (rcode, answers) == (RCODE_NXDOMAIN, []), (rcode, answers)
        rcode, _, answers = dns_query(addr, port, "example.com")
        assert (rcode, answers) == (RCODE_REFUSED, []), (rcode, answers)
        # The name exists but has no IPv6 address (IPv4 ingress): NOERROR without records.
        rcode, _, answers = dns_query(addr, port, host, qtype=TYPE_AAAA)
        assert (rcode, answers) == (RCODE_NOERROR, []), (rcode, answers)
        # An ancestor of a name that resolves exists (RFC 8020), without records.
        rcode, _, answers = dns_query(addr, port, host.split(".", 1)[1])
        assert (rcode, answers) == (RCODE_NOERROR, []), (rcode, answers)

    # Requests through either VPC reach the service, and the target is told which VPC they came from.
    for vpc in (vpc1, vpc2):
        c = dp.client(vpc)
        r = dp.wait_serving(c, host, "t")
        assert r.seen("x-amzn-lattice-network") == [f"SourceVpcArn={vpc_arn(vpc)}"]


def test_vpcs_of_other_service_networks_are_isolated(dp):
    t1, t2 = dp.target("one"), dp.target("two")
    vpc1, vpc2 = dp.res.vpc(), dp.res.vpc()
    tg1, tg2 = dp.tg(vpc1)["id"], dp.tg(vpc2)["id"]
    dp.register(tg1, t1)
    dp.register(tg2, t2)
    m1 = dp.mesh(forward(tg1), vpc=vpc1)
    m2 = dp.mesh(forward(tg2), vpc=vpc2)
    in1, in2 = dp.ingress(vpc1), dp.ingress(vpc2)
    c1, c2 = dp.client(vpc1), dp.client(vpc2)
    dp.wait_serving(c1, m1["host"], "one")
    dp.wait_serving(c2, m2["host"], "two")

    # Each VPC reaches its own network's service only: the other one's name is unknown to it.
    _assert_proxy_error(c1.request("GET", "/", m2["host"]), 404)
    _assert_proxy_error(c2.request("GET", "/", m1["host"]), 404)
    for t, vpc in ((t1, vpc1), (t2, vpc2)):
        sources = {v for r in t.requests for k, v in r["headers"] if k.lower() == "x-amzn-lattice-network"}
        assert sources == {f"SourceVpcArn={vpc_arn(vpc)}"}, (t.name, sources)
    for info, own, other in ((in1, m1["host"], m2["host"]), (in2, m2["host"], m1["host"])):
        rcode, _, answers = dns_query(info["address"], info["dnsPort"], own)
        assert rcode == RCODE_NOERROR and [a[2] for a in answers] == [info["address"]], (rcode, answers)
        rcode, _, answers = dns_query(info["address"], info["dnsPort"], other)
        assert (rcode, answers) == (RCODE_NXDOMAIN, []), (rcode, answers)
