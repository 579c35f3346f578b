"""What scripts/authbench and scripts/logbench share: the control-plane client, and the load
generator run against one service while the Trellis process's CPU time is read around it.

Two ways to load a service, both from core 0 with one thread and 50 connections:
- a fixed offered rate (`rate` requests a second, h2load over HTTP/1.1): the services compared
  are measured under the same load, so the kernel's share of a request (how many requests a
  wakeup finds, how many segments a write carries) is the same on both sides and the figure
  is the work the feature adds. A run that falls short of its rate stops with an error.
- as fast as it goes (`rate` 0, wrk): each service gets the load it can take, so a dearer one
  runs at a lower rate, where every request costs the kernel more (fewer requests a wakeup).
"""
import json
import os
import re
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# How far below the offered rate a fixed-rate run may fall before it is refused.
RATE_SHORTFALL = 0.03


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    """(user, system) seconds of CPU the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class Api:
    """Trellis's control plane at `endpoint`; a refused call stops the benchmark `name`."""

    def __init__(self, endpoint, name):
        self.endpoint = endpoint
        self.name = name

    def call(self, method, path, body=None, form=None):
        if form is not None:
            data, ctype = form.encode(), "application/x-www-form-urlencoded"
        else:
            data, ctype = (json.dumps(body).encode() if body is not None else None), "application/json"
        req = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                     headers={"content-type": ctype})
        try:
            with OPENER.open(req, timeout=30) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{self.name}: {method} {path}: {e.code} {e.read().decode()}") from e

    def json(self, method, path, body=None):
        return json.loads(self.call(method, path, body) or "null")


def check(url, headers):
    """Status of one request with `headers` (curl)."""
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*"]
    for h in headers:
        args += ["-H", h]
    return subprocess.run(args + [url], capture_output=True, text=True, timeout=10).stdout


@dataclass
class Run:
    rps: float
    # "p99 …" (wrk), or "mean …" (h2load gives no percentiles).
    latency: str
    # The process's CPU microseconds a request, and their user-space part.
    us: float
    user_us: float


def load(name, url, headers, pid, duration, rate):
    """Loads `url` with requests carrying `headers` ("Name: value") for `duration` seconds, at
    `rate` requests a second (0: as fast as it goes), and reads process `pid`'s CPU around it."""
    if rate:
        args = ["h2load", "--h1", "-t1", "-c50", f"--rps={rate / 50:g}", f"-D{duration}"]
        for h in headers:
            key, value = h.split(": ", 1)
            args += ["-H", f"{':authority' if key.lower() == 'host' else key}: {value}"]
    else:
        args = ["wrk", "-t1", "-c50", f"-d{duration}s", "--latency"]
        for h in headers:
            args += ["-H", h]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(["taskset", "-c", "0", *args, url], capture_output=True, text=True,
                         timeout=duration + 30).stdout
    cpu1 = cpu_seconds(pid)
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    if rate:
        m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed", out)
        ok = re.search(r"status codes: (\d+) 2xx", out)
        if not m or int(m.group(2)) or not ok or int(ok.group(1)) != int(m.group(1)):
            raise SystemExit(f"{name}: failed requests:\n{out}")
        requests = int(m.group(1))
        rps = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", out).group(1))
        if rps < rate * (1 - RATE_SHORTFALL):
            raise SystemExit(f"{name}: {rps:.0f} req/s fell short of RATE={rate}: offer a lower rate")
        latency = "mean " + re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)
    else:
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            raise SystemExit(f"{name}: {non2xx.group(1)} failed requests:\n{out}")
        latency = "p99 " + re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return Run(rps, latency, (user + system) * 1e6 / requests, user * 1e6 / requests)
