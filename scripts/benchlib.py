"""What scripts/authbench and scripts/logbench share: the setting they run in (a backend, trellis,
a VPC in a service network), and the load generator run against one service while the Trellis
process's CPU time is read around it: the time its threads ran, as the scheduler counts it (to
the nanosecond, so short runs measure as well as long ones; the user-space part, from clock
ticks, is coarser).

Two ways to load a service, both from core 0 with one thread and 50 connections:
- a fixed offered rate (`rate` requests a second, h2load over HTTP/1.1): the services compared
  are measured under the same load, so the kernel's share of a request (how many requests a
  wakeup finds, how many segments a write carries) is the same on both sides and the figure
  is the work the feature adds. A run that falls short of its rate stops with an error.
- as fast as it goes (`rate` 0, wrk): each service gets the load it can take, so a dearer one
  runs at a lower rate, where every request costs the kernel more (fewer requests a wakeup).
"""
import glob
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    """(user, system) seconds of CPU the process has used (in clock ticks: 10 ms steps)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_seconds(pid):
    """Seconds the process's threads have run on a CPU, to the nanosecond (the scheduler's
    own count: a short run measures as well as a long one)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


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
    # Requests answered.
    requests: int


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
    cpu0, run0 = cpu_seconds(pid), run_seconds(pid)
    out = subprocess.run(["taskset", "-c", "0", *args, url], capture_output=True, text=True,
                         timeout=duration + 30).stdout
    cpu1, run1 = cpu_seconds(pid), run_seconds(pid)
    user, ran = cpu1[0] - cpu0[0], run1 - run0
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
    return Run(rps, latency, ran * 1e6 / requests, user * 1e6 / requests, requests)


class Setting:
    """What both benchmarks run in, as a context manager: an nginx backend on core 0 and
    trellis (`TRELLIS_BIN`, else a release build) with one worker thread on core 1, in loopback
    mode with a temporary data directory, and a VPC associated with a service network. On exit
    everything it started is stopped by PID and the directory removed."""

    def __init__(self, name, rate):
        self.name = name
        # Instructions counted by Callgrind instead of CPU time (see `compare`).
        self.callgrind = bool(os.environ.get("CALLGRIND"))
        tools = ("h2load" if rate or self.callgrind else "wrk", "nginx", "taskset", "curl")
        for tool in tools + (("valgrind", "callgrind_control") if self.callgrind else ()):
            if not shutil.which(tool):
                sys.exit(f"{name}: needs {tool} (Debian: apt-get install nghttp2-client wrk nginx util-linux curl"
                         f"{' valgrind' if self.callgrind else ''})")
        self.binary = os.environ.get("TRELLIS_BIN")
        if not self.binary:
            subprocess.run(["cargo", "build", "--release", "--locked", "-p", "trellis"], cwd=ROOT, check=True)
            target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
            self.binary = os.path.join(target, "release", "trellis")
        self.procs = []

    def __enter__(self):
        self.work = tempfile.mkdtemp(prefix=f"{self.name}-")
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self):
        work = self.work
        self.backend_port = free_port()
        with open(f"{work}/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{self.backend_port}; keepalive_requests 1000000;
    location / {{ return 200 "backend ok\\n"; }} }} }}
""")
        self.procs.append(subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", f"{work}/nginx.conf", "-p", work],
                                           stderr=subprocess.DEVNULL))
        port = free_port()
        env = dict(os.environ, TRELLIS_LOG="warn", TRELLIS_WORKER_THREADS="1")
        cmd = [self.binary, "serve", "--network", "loopback", "--listen", f"127.0.0.1:{port}",
               "--data-dir", f"{work}/data"]
        if self.callgrind:
            # Counting is switched on by the first run (`counted`).
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={work}/callgrind.out", *cmd]
        self.server = subprocess.Popen(["taskset", "-c", "1", *cmd], env=env, stderr=subprocess.DEVNULL)
        self.procs.append(self.server)
        self.api = Api(f"http://127.0.0.1:{port}", self.name)
        # Under Callgrind the server takes far longer to start.
        for _ in range(1200 if self.callgrind else 100):
            try:
                self.api.call("GET", "/_trellis/health")
                break
            except OSError:
                time.sleep(0.1)
        form = "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.0.0.0%2F16"
        self.vpc = re.search(r"<vpcId>(.*?)</vpcId>", self.api.call("POST", "/", form=form)).group(1)
        self.network = self.api.json("POST", "/servicenetworks", {"name": "bench-net"})["id"]
        self.api.call("POST", "/servicenetworkvpcassociations",
                      {"serviceNetworkIdentifier": self.network, "vpcIdentifier": self.vpc})

    def __exit__(self, *_):
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP_WORK"):
            print(f"{self.name}: work directory kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def service(self, name, **fields):
        """A service `bench-NAME` (with `fields`) whose HTTP:80 listener forwards to a target
        group of its own with the backend in it; not yet in the service network."""
        api = self.api
        tg = api.json("POST", "/targetgroups", {"name": f"bench-{name}", "type": "IP", "config": {
            "port": self.backend_port, "protocol": "HTTP", "vpcIdentifier": self.vpc}})["id"]
        api.call("POST", f"/targetgroups/{tg}/registertargets",
                 {"targets": [{"id": "127.0.0.1", "port": self.backend_port}]})
        svc = api.json("POST", "/services", {"name": f"bench-{name}", **fields})
        api.call("POST", f"/services/{svc['id']}/listeners", {
            "name": "http", "protocol": "HTTP", "port": 80,
            "defaultAction": {"forward": {"targetGroups": [{"targetGroupIdentifier": tg}]}}})
        return svc

    def associate(self, svc):
        self.api.call("POST", "/servicenetworkserviceassociations",
                      {"serviceIdentifier": svc["id"], "serviceNetworkIdentifier": self.network})

    def url(self):
        """The VPC's entry, once its proxy listens."""
        for _ in range(100):
            try:
                info = self.api.json("GET", f"/_trellis/vpcs/{self.vpc}/ingress")
                return f"http://{info['address']}:{80 + info['lowPortOffset']}/"
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{self.name}: the VPC's entry never came up")

    def wait_ok(self, url, label, headers):
        """Waits for a request with `headers()` (made anew each try) to be answered 200."""
        for _ in range(100):
            if check(url, headers()) == "200":
                return
            time.sleep(0.1)
        args = ["curl", "-s", "--noproxy", "*"] + [a for h in headers() for a in ("-H", h)]
        body = subprocess.run(args + [url], capture_output=True, text=True, timeout=10).stdout
        raise SystemExit(f"{self.name}: {label} never answered 200: {body}")

    def counted(self, url, headers, label, duration, rate):
        """Instructions the server runs per request (user space, every thread) while `url` is
        loaded with `headers` at `rate` for `duration` seconds, counted by Callgrind."""
        pid = str(self.server.pid)
        # Counting is switched on once (switched off and on again, later dumps came out short
        # here) and zeroed before each run, which is dumped at its end.
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        load(self.name, url, headers, self.server.pid, 2, rate)
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        run = load(self.name, url, headers, self.server.pid, duration, rate)
        subprocess.run(["callgrind_control", "-d", label, pid], check=True, capture_output=True)
        dump = max(glob.glob(f"{self.work}/callgrind.out.*"), key=os.path.getmtime)
        with open(dump) as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
        return total / run.requests

    def compare(self, url, headers, reps, duration, rate):
        """`reps` repetitions measuring the two services `headers` names (label -> a function
        making a request's headers), back to back, the second first in every other one (a
        machine whose speed drifts then weighs on both alike); prints each run, the medians and
        the median of the repetitions' ratios second/first, the figure to quote. With CALLGRIND
        set, the instructions the server runs per request instead (user space only, at
        CALLGRIND_RATE requests a second, 400 unless set: Callgrind runs it ~50 times slower),
        which do not move with the machine's neighbours as CPU time does."""
        (a, b) = headers
        if self.callgrind:
            rate = int(os.environ.get("CALLGRIND_RATE", "400"))
            counts = {a: [], b: []}
            for rep in range(reps):
                for label in (a, b) if rep % 2 == 0 else (b, a):
                    counts[label].append(self.counted(url, headers[label](), label, duration, rate))
                    print(f"  rep {rep + 1} {label:>6}: {counts[label][-1]:9.0f} instructions/request", flush=True)
            med = {n: statistics.median(c) for n, c in counts.items()}
            for n, m in med.items():
                print(f"median {n.upper():>6}: {m:9.0f} instructions/request")
            print(f"{b.upper()} - {a.upper()}: {med[b] - med[a]:.0f} instructions/request "
                  f"({med[b] / med[a]:.3f} times)")
            return
        results = {a: [], b: []}
        for rep in range(reps):
            for label in (a, b) if rep % 2 == 0 else (b, a):
                run = load(self.name, url, headers[label](), self.server.pid, duration, rate)
                results[label].append(run)
                print(f"  rep {rep + 1} {label:>6}: {run.rps:9.0f} req/s  {run.latency:>13}  {run.us:6.2f} us/req"
                      f" (user {run.user_us:5.2f})", flush=True)
        pairs = sorted(y.us / x.us for x, y in zip(results[a], results[b]))
        med = {n: statistics.median(r.us for r in rs) for n, rs in results.items()}
        for n, rs in results.items():
            rps, user = statistics.median(r.rps for r in rs), statistics.median(r.user_us for r in rs)
            print(f"median {n.upper():>6}: {rps:9.0f} req/s  {med[n]:6.2f} us/req (user {user:5.2f})")
        ratio = f"{b.upper()}/{a.upper()}"
        print(f"ratio of the medians {med[b] / med[a]:.3f}")
        print(f"{ratio} per repetition: {' '.join(f'{p:.3f}' for p in pairs)}  "
              f"{ratio} = {statistics.median(pairs):.3f} (their median)")
