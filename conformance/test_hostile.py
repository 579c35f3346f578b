"""Hostile clients, black-box: slow heads (slowloris), idle connections, huge header counts and
sizes, and HTTP/2 rapid reset, SETTINGS floods and zero-window stalls, each bounded in count and
time. While each
runs, a well-behaved client keeps being served within a generous bound of its own latency before
the attack; afterwards the server's file descriptors and memory are back where they were.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import statistics
import time

import pytest

import support
from support import wait_for
from test_dataplane import DataPlane, VpcClient
from test_https import https_mesh, trellis_ca

CONFIG = """relaxed_health_checks = true

[proxy]
header_read_timeout_seconds = 2
"""


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Plane:
    """A server with one HTTP:80 and one HTTPS:443 service on a fake target, and a measure of a
    well-behaved client's latency."""

    def __init__(self, dp: DataPlane, tmp_path):
        self.dp = dp
        self.pid = dp.server.proc.pid
        self.m, self.client = dp.serving_app()
        self.info = dp.ingress(self.m["vpc"])
        self.address, self.port = self.info["address"], dp.real_port(self.info, 80)
        self.tls = https_mesh(dp)
        self.ca = tmp_path / "ca.pem"
        self.ca.write_text(trellis_ca(dp.endpoint))

    def latencies(self, n: int = 20) -> list[float]:
        """Seconds each of `n` requests took on a fresh keep-alive connection."""
        client = VpcClient(self.address, self.port)
        out = []
        try:
            for _ in range(n):
                t = time.monotonic()
                r = client.request("GET", "/", self.m["host"])
                assert r.status == 200, r
                out.append(time.monotonic() - t)
        finally:
            client.close()
        return out

    def baseline(self):
        self.latencies(5)  # warm
        lat = self.latencies()
        return statistics.median(lat), fds(self.pid), rss_mib(self.pid)

    def assert_served_during(self, median: float):
        lat = self.latencies()
        bound = max(20 * median, 1.0)
        assert max(lat) < bound, f"a well-behaved client waited {max(lat):.3f}s (bound {bound:.3f}s, median {median:.4f}s)"
        return statistics.median(lat), max(lat)

    def assert_flat(self, base_fds: int, base_rss: float, pooled: int = 0):
        """Descriptors back near `base_fds` (with `pooled` idle keep-alive connections to the
        target, which the proxy keeps for the service's idle timeout), and RSS near `base_rss`."""
        wait_for(lambda: fds(self.pid) <= base_fds + pooled + 8, 15, interval=0.2,
                 message=f"file descriptors back near {base_fds} + {pooled} pooled")
        grown = rss_mib(self.pid) - base_rss
        assert grown < 32, f"RSS grew {grown:.1f} MiB"
        return fds(self.pid), grown


@pytest.fixture
def plane(server_factory, tmp_path):
    dp = DataPlane(server_factory(config_text=CONFIG))
    try:
        yield Plane(dp, tmp_path)
    finally:
        dp.close()


def test_slow_heads_and_idle_connections_are_closed_and_others_are_served(plane):
    median, base_fds, base_rss = plane.baseline()
    slow, idle = [], []
    for _ in range(300):
        s = socket.create_connection((plane.address, plane.port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: " + plane.m["host"].encode() + b"\r\n")
        slow.append(s)
        idle.append(socket.create_connection((plane.address, plane.port), timeout=5))
    wait_for(lambda: fds(plane.pid) >= base_fds + 500, 2, interval=0.02, message="the server holding the connections")
    # The slow ones go on dribbling a header byte every half second; the idle ones send nothing.
    closed: set[int] = set()
    started = time.monotonic()
    during = None
    while time.monotonic() - started < 8 and len(closed) < len(slow) + len(idle):
        for i, s in enumerate(slow):
            if i not in closed:
                try:
                    s.sendall(b"X")
                except OSError:
                    closed.add(i)
        everyone = slow + idle
        open_ = {s: i for i, s in enumerate(everyone) if i not in closed}
        readable, _, _ = select.select(list(open_), [], [], 0.5)
        for s in readable:
            try:
                # An answer (a 408 or 400) may come before the end; the end is what counts.
                if s.recv(4096) == b"":
                    closed.add(open_[s])
            except OSError:
                closed.add(open_[s])
        if during is None and time.monotonic() - started > 1:
            during = plane.assert_served_during(median)
    took = time.monotonic() - started
    for s in slow + idle:
        s.close()
    assert len(closed) == 600, f"{600 - len(closed)} slow or idle connections still open after {took:.1f}s"
    after = plane.assert_flat(base_fds, base_rss)
    print(f"\n600 slow and idle connections closed within {took:.1f}s (header timeout 2s); a client meanwhile: "
          f"median {during[0] * 1000:.1f} ms, max {during[1] * 1000:.1f} ms (before: {median * 1000:.1f} ms); "
          f"fds {base_fds} -> {after[0]}, RSS +{after[1]:.1f} MiB")


def test_slow_bodies_hold_a_connection_each_and_nothing_more(plane):
    """200 clients send a head promising a 4 KiB body, then a byte of it every 0.3 s: the proxy
    passes each on as it comes (no buffering), a well-behaved client is served meanwhile, and
    once the slow clients finish or go, descriptors and memory are back where they were."""
    median, base_fds, base_rss = plane.baseline()
    host = plane.m["host"].encode()
    slow = []
    for _ in range(200):
        s = socket.create_connection((plane.address, plane.port), timeout=5)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 4096\r\n\r\n")
        slow.append(s)
    started = time.monotonic()
    during = None
    sent = 0
    while time.monotonic() - started < 5:
        for s in slow:
            s.sendall(b"x")
        sent += 1
        time.sleep(0.3)
        if during is None and time.monotonic() - started > 1:
            during = plane.assert_served_during(median)
    held = fds(plane.pid) - base_fds
    # Half finish their bodies and get their answers; the other half go away mid-body.
    finished = 0
    for s in slow[:100]:
        s.sendall(b"x" * (4096 - sent))
    for s in slow[:100]:
        if s.recv(4096).startswith(b"HTTP/1.1 200"):
            finished += 1
    for s in slow:
        s.close()
    # The target connections of the finished requests stay in the keep-alive pool; those of
    # the abandoned ones close with their clients.
    after = plane.assert_flat(base_fds, base_rss, pooled=finished)
    print(f"\n200 slow bodies for 5s: {held} descriptors held meanwhile (a client and a target connection "
          f"each), {finished} of 100 finished and answered (their target connections pooled); a client meanwhile: median {during[0] * 1000:.1f} ms, "
          f"max {during[1] * 1000:.1f} ms (before {median * 1000:.1f} ms); fds {base_fds} -> {after[0]}, "
          f"RSS +{after[1]:.1f} MiB")
    assert finished == 100
    assert held <= 2 * 200 + 16, held


def test_huge_header_counts_and_sizes_are_refused(plane):
    median, base_fds, base_rss = plane.baseline()
    host = plane.m["host"].encode()
    cases = {
        "1000 fields": b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(1000)),
        "a 200 KiB field": b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-A: " + b"a" * 200_000 + b"\r\n",
        "a 200 KiB target": b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: " + host + b"\r\n",
    }
    for name, head in cases.items():
        for _ in range(50):
            with socket.create_connection((plane.address, plane.port), timeout=5) as s:
                try:
                    s.sendall(head + b"\r\n")
                except OSError:
                    pass  # refused before all of it was read
                answer = b""
                try:
                    while chunk := s.recv(65536):
                        answer += chunk
                except OSError:
                    pass
                status = answer.split(b"\r\n", 1)[0]
                assert status.startswith(b"HTTP/1.1 4"), (name, status)
    plane.assert_served_during(median)
    plane.assert_flat(base_fds, base_rss)


def _h2_connection(plane: Plane):
    import h2.config
    import h2.connection
    context = ssl.create_default_context(cafile=str(plane.ca))
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection((plane.tls["address"], plane.tls["port"]), timeout=5)
    s = context.wrap_socket(raw, server_hostname=plane.tls["host"])
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def test_http2_rapid_reset_and_settings_floods_are_bounded(plane):
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    median, base_fds, base_rss = plane.baseline()
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", plane.tls["host"]), (":path", "/")]
    # Rapid reset: streams opened and cancelled at once, 5,000 of them, as fast as they go.
    s, conn = _h2_connection(plane)
    sent, ended = 0, None
    s.settimeout(0.2)
    try:
        while sent < 5000 and ended is None:
            for _ in range(100):
                stream = conn.get_next_available_stream_id()
                conn.send_headers(stream, headers, end_stream=True)
                conn.reset_stream(stream, error_code=h2.errors.ErrorCodes.CANCEL)
                sent += 1
            try:
                s.sendall(conn.data_to_send())
                data = s.recv(65536)
                events = conn.receive_data(data) if data else []
                ended = next((e for e in events if isinstance(e, h2.events.ConnectionTerminated)), ended)
                if not data:
                    ended = ended or "closed"
            except socket.timeout:
                pass
            except (OSError, h2.exceptions.ProtocolError) as e:
                ended = ended or repr(e)
    finally:
        s.close()
    during_reset = plane.assert_served_during(median)
    print(f"\nrapid reset: {sent} streams opened and reset; the server {'ended it: ' + str(ended) if ended else 'kept up'}"
          f"; a client meanwhile median {during_reset[0] * 1000:.1f} ms")
    # SETTINGS flood: 20,000 SETTINGS frames, their acknowledgements never read.
    s, conn = _h2_connection(plane)
    s.settimeout(2)
    frames, stalled = 0, False
    try:
        for _ in range(200):
            for _ in range(100):
                conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
                frames += 1
            try:
                s.sendall(conn.data_to_send())
            except (socket.timeout, OSError):
                stalled = True  # the server stopped reading: backpressure, or it closed
                break
    finally:
        s.close()
    plane.assert_served_during(median)
    after = plane.assert_flat(base_fds, base_rss)
    print(f"SETTINGS flood: {frames} frames sent{' before the server stopped reading' if stalled else ''}; "
          f"fds {base_fds} -> {after[0]}, RSS +{after[1]:.1f} MiB")
    # Zero-window stalls: 50 connections that open no window for responses, 10 requests each.
    stalls = []
    for _ in range(50):
        s, conn = _h2_connection(plane)
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        for _ in range(10):
            conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
        s.sendall(conn.data_to_send())
        stalls.append(s)
    time.sleep(1)
    during_stall = plane.assert_served_during(median)
    for s in stalls:
        s.close()
    after = plane.assert_flat(base_fds, base_rss)
    print(f"zero-window stalls: 500 responses held by 50 connections; a client meanwhile median "
          f"{during_stall[0] * 1000:.1f} ms; after they left: fds {base_fds} -> {after[0]}, RSS +{after[1]:.1f} MiB")


def test_connections_past_the_limit_are_closed_at_once_and_counted(server_factory):
    # The held connections must outlast the test: a long header timeout.
    config = "relaxed_health_checks = true\n[proxy]\nheader_read_timeout_seconds = 60\nmax_connections = 40\n"
    dp = DataPlane(server_factory(config_text=config))
    try:
        m, probe = dp.serving_app()
        info = dp.ingress(m["vpc"])
        address, port = info["address"], dp.real_port(info, 80)
        probe.close()
        # Connections that send a head slowly (within its timeout) take the places, until one
        # is closed at once: the limit is reached.
        held, first_refused = [], False
        while len(held) < 50 and not first_refused:
            s = socket.create_connection((address, port), timeout=0.3)
            s.sendall(b"GET / HTTP/1.1\r\n")
            try:
                first_refused = s.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                first_refused = True
            if first_refused:
                s.close()
            else:
                held.append(s)
        assert first_refused and 38 <= len(held) <= 40, (first_refused, len(held))
        # A flood of 200 more: each is closed at once, with nothing answered.
        started = time.monotonic()
        refused = accepted = 0
        for _ in range(200):
            with socket.create_connection((address, port), timeout=2) as s:
                try:
                    if s.recv(1) == b"":
                        refused += 1
                except ConnectionResetError:
                    refused += 1
                except TimeoutError:
                    accepted += 1  # a place a just-closed connection gave back
        assert refused + accepted == 200 and accepted <= 40 - len(held), (refused, accepted)
        print(f"\n200 connections past the limit of 40 closed in {time.monotonic() - started:.2f}s")
        metrics = support.raw_request(dp.endpoint, "GET", "/_trellis/metrics").body.decode()
        assert f"trellis_connections_refused_total {1 + refused}" in metrics, [l for l in metrics.splitlines() if "refused" in l]
        # Once the held ones go, clients are served again.
        for s in held:
            s.close()
        client = VpcClient(address, port)
        dp.wait_serving(client, m["host"], "app")
        client.close()
    finally:
        dp.close()
