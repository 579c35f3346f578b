"""Shared helpers for the Trellis black-box conformance suite.

Everything here talks to Trellis only over HTTP, with the real AWS clients (boto3/botocore) or with
raw `http.client` requests where a client would refuse to send something.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

REGION = "us-east-1"
OTHER_REGION = "eu-west-1"
ACCOUNT = os.environ.get("TRELLIS_ACCOUNT", "000000000000")
ACCESS_KEY = "AKIAEXAMPLE"
SECRET_KEY = "secret"
PARTITION_LABEL = os.environ.get("TRELLIS_PARTITION_LABEL", "7d67968")

HERE = Path(__file__).resolve().parent
DEFAULT_BIN = HERE.parent / "target" / "debug" / "trellis"
TRELLIS_BIN = os.environ.get("TRELLIS_BIN", str(DEFAULT_BIN))

# Async status transitions (CREATE_IN_PROGRESS -> ACTIVE, DELETE_IN_PROGRESS -> gone) must finish
# within 1 s (spec §9); 0.5 s of slack absorbs request latency on a loaded 2-core machine.
SETTLE_SECONDS = float(os.environ.get("TRELLIS_SETTLE_SECONDS", "1.5"))
HEALTH_TIMEOUT = 30.0
# Raw-response checks on every vpc-lattice call (status codes, JSON, no nulls, request ids).
# TRELLIS_WIRE_CHECKS=0 switches them off, e.g. to triage a failure with the checks out of the way.
EXTERNAL = bool(os.environ.get("TRELLIS_ENDPOINT"))
# TRELLIS_TEST_STORE=etcd runs every server the suite starts over an etcd of its own (started and
# killed with it) instead of the embedded store; tests that set TRELLIS_STORE themselves keep it.
TEST_STORE = os.environ.get("TRELLIS_TEST_STORE", "embedded")
ETCD_START_TIMEOUT = 20.0
WIRE_CHECKS = os.environ.get("TRELLIS_WIRE_CHECKS", "1") != "0"

HEX17 = "[0-9a-f]{17}"
ID_PREFIXES = ("sn", "svc", "listener", "rule", "tg", "snva", "snsa", "als", "vpc", "subnet", "sg")

DEFAULT_STATUS = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ConflictException": 409,
    "ServiceQuotaExceededException": 402,
    "ThrottlingException": 429,
    "InternalServerException": 500,
}

VALIDATION_REASONS = {"unknownOperation", "cannotParse", "fieldValidationFailed", "other"}

ISO_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
TIMESTAMP_KEYS = {"createdAt", "lastUpdatedAt"}


class WireViolation(AssertionError):
    """Raised from inside botocore when a raw response breaks a wire rule of lattice.md §1.3."""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def uname(kind: str) -> str:
    """A unique, valid resource name (lowercase, hyphens, no reserved prefix, <= 20 chars)."""
    return f"cf-{kind}-{uuid.uuid4().hex[:12]}"


def id_re(prefix: str) -> re.Pattern:
    return re.compile(rf"^{prefix}-{HEX17}$")


def assert_id(value, prefix: str, what: str = "") -> None:
    assert isinstance(value, str) and id_re(prefix).match(value), (
        f"{what or prefix} id {value!r} is not '{prefix}-' followed by 17 lowercase hex digits"
    )


def arn(resource: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:aws:vpc-lattice:{region}:{account}:{resource}"


def service_dns_name(name: str, service_id: str, region: str = REGION) -> str:
    return f"{name}-{service_id[len('svc-'):]}.{PARTITION_LABEL}.vpc-lattice-svcs.{region}.on.aws"


def strip_meta(resp: dict) -> dict:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def assert_no_none(obj, path: str = "response") -> None:
    """No member may be None anywhere in a parsed response (unset members must be absent)."""
    if obj is None:
        raise AssertionError(f"{path} is None: unset members must be absent, not null")
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert_no_none(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            assert_no_none(v, f"{path}[{i}]")


def assert_timestamp(value, what: str = "timestamp") -> None:
    assert isinstance(value, dt.datetime), f"{what} {value!r} did not parse to a datetime"
    assert value.tzinfo is not None, f"{what} {value!r} has no timezone (must be UTC 'Z')"
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - value).total_seconds()) < 86400, f"{what} {value} is not close to now ({now})"


def wait_for(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value; return that value or fail."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message} (last: {last!r})")
        time.sleep(interval)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def http_status(resp_or_exc) -> int:
    resp = resp_or_exc.response if isinstance(resp_or_exc, ClientError) else resp_or_exc
    return resp["ResponseMetadata"]["HTTPStatusCode"]


def check_error(exc: ClientError, code: str, status: int | None = None, **members) -> dict:
    """Assert a ClientError's code, HTTP status and parsed members; returns e.response.

    A member expectation may be a value (compared with ==) or a callable predicate.
    """
    resp = exc.response
    got_code = error_code(exc)
    assert got_code == code, f"expected error code {code}, got {got_code!r}: {resp.get('Error')}"
    want_status = status if status is not None else DEFAULT_STATUS.get(code, 400)
    got_status = http_status(exc)
    assert got_status == want_status, f"{code}: expected HTTP {want_status}, got {got_status}"
    message = resp.get("Error", {}).get("Message") or resp.get("message")
    assert message, f"{code} carries no message"
    if code == "ValidationException":
        assert resp.get("reason") in VALIDATION_REASONS, (
            f"ValidationException.reason {resp.get('reason')!r} not one of {sorted(VALIDATION_REASONS)}"
        )
    if code in ("ResourceNotFoundException", "ConflictException"):
        assert resp.get("resourceId"), f"{code} lacks required member resourceId: {resp}"
        assert resp.get("resourceType"), f"{code} lacks required member resourceType: {resp}"
    if code == "ServiceQuotaExceededException":
        for m in ("resourceType", "serviceCode", "quotaCode"):
            assert resp.get(m), f"{code} lacks required member {m}: {resp}"
    for key, want in members.items():
        got = resp.get(key)
        if callable(want):
            assert want(got), f"{code}.{key} = {got!r} does not satisfy the expectation"
        else:
            assert got == want, f"{code}.{key}: expected {want!r}, got {got!r}"
    return resp


class Caught:
    """What `raises` yields: `.value` is the ClientError once the block has raised it."""

    value: ClientError | None = None


@contextlib.contextmanager
def raises(client, code: str, status: int | None = None, **members):
    """`with raises(lattice, "ConflictException", resourceType="SERVICE"): ...`

    The block must raise a ClientError with that code, HTTP status (default: the code's usual one)
    and members; when the client models `code`, the exception must be of its modelled class.
    """
    exc_cls = ClientError
    if hasattr(client, "exceptions"):
        exc_cls = getattr(client.exceptions, code, ClientError)
    caught = Caught()
    try:
        yield caught
    except ClientError as e:
        caught.value = e
        check_error(e, code, status, **members)
        assert isinstance(e, exc_cls), f"expected the modelled exception class {exc_cls.__name__}, got {type(e)}"
        return
    want = status if status is not None else DEFAULT_STATUS.get(code, 400)
    pytest.fail(f"expected {code} (HTTP {want}), but the call succeeded", pytrace=False)


def field_names(resp: dict) -> list:
    return [f.get("name") for f in resp.get("fieldList") or []]


def has_field(name: str):
    """Predicate for raises(..., fieldList=has_field("name")): a fieldList entry names `name`."""

    def pred(field_list):
        names = [f.get("name", "") for f in field_list or []]
        return any(n == name or n.endswith("." + name) or n.startswith(name + ".") or n.startswith(name + "[")
                   for n in names)

    return pred


def list_all(client, operation: str, page_size: int | None = None, **kwargs) -> list:
    """Call a List* operation until nextToken is absent; tokens must never repeat."""
    items, seen_tokens, token = [], set(), None
    fn = getattr(client, operation)
    for _ in range(100000):
        args = dict(kwargs)
        if page_size is not None:
            args["maxResults"] = page_size
        if token is not None:
            args["nextToken"] = token
        resp = fn(**args)
        assert "items" in resp, f"{operation} response lacks 'items'"
        items.extend(resp["items"])
        token = resp.get("nextToken")
        if token is None:
            return items
        assert token != "", f"{operation} returned an empty nextToken (omit it at the end of the list)"
        assert token not in seen_tokens, f"{operation} returned the same nextToken twice: {token!r}"
        seen_tokens.add(token)
    raise AssertionError(f"{operation} paginated forever")


def find_item(items, ident, key="id"):
    for it in items:
        if it.get(key) == ident:
            return it
    return None


# --------------------------------------------------------------------------------------------
# Raw-response wire checks hooked into botocore (vpc-lattice only)
# --------------------------------------------------------------------------------------------


def _walk_raw(obj, path, problems):
    if obj is None:
        problems.append(f"{path} is JSON null (unset members must be absent)")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k in TIMESTAMP_KEYS and isinstance(v, str) and not ISO_TS_RE.match(v):
                problems.append(f"{path}.{k} = {v!r} is not ISO-8601 UTC like 2023-05-05T21:35:29.339Z")
            if k in TIMESTAMP_KEYS and not isinstance(v, str):
                problems.append(f"{path}.{k} = {v!r} is not an ISO-8601 string")
            if k == "nextToken" and (not isinstance(v, str) or v == ""):
                problems.append(f"{path}.nextToken = {v!r}: end of list must omit nextToken")
            _walk_raw(v, f"{path}.{k}", problems)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk_raw(v, f"{path}[{i}]", problems)


def _lattice_wire_check(operation_model, response_dict, **_):
    status = response_dict["status_code"]
    headers = response_dict["headers"]
    body = response_dict["body"] or b""
    op = operation_model.name
    problems = []
    if not headers.get("x-amzn-requestid"):
        problems.append("no x-amzn-RequestId header")
    if 200 <= status < 300:
        want = operation_model.http.get("responseCode", 200)
        if status != want:
            problems.append(f"HTTP {status}, but the model says {op} succeeds with {want}")
        if status == 204 and body.strip():
            problems.append(f"204 response has a body: {body[:200]!r}")
    if body.strip() and status != 204:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            problems.append(f"Content-Type {ctype!r} is not application/json")
        try:
            doc = json.loads(body)
        except ValueError:
            problems.append(f"body is not JSON: {body[:200]!r}")
            doc = None
        if doc is not None:
            if not isinstance(doc, dict):
                problems.append(f"body is not a JSON object: {body[:200]!r}")
            else:
                _walk_raw(doc, op, problems)
                out = operation_model.output_shape
                if 200 <= status < 300 and out is not None and "items" in out.members and "items" not in doc:
                    problems.append(f"{op} response lacks 'items' (always emit \"items\": [])")
    elif 200 <= status < 300 and status != 204:
        out = operation_model.output_shape
        if out is not None and "items" in out.members:
            problems.append(f"{op} returned an empty body; expected at least {{\"items\": []}}")
    if problems:
        raise WireViolation(f"{op} (HTTP {status}) wire violations: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


def client_config(**overrides) -> Config:
    # proxies={} keeps any HTTP(S)_PROXY of the environment away from the loopback endpoint.
    base = dict(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30, proxies={})
    base.update(overrides)
    return Config(**base)


def make_client(service: str, endpoint: str, region: str = REGION, wire_checks: bool = True, **config):
    client = boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=client_config(**config),
    )
    if service == "vpc-lattice" and wire_checks and WIRE_CHECKS:
        client.meta.events.register("before-parse.vpc-lattice.*", _lattice_wire_check)
    return client


# --------------------------------------------------------------------------------------------
# Raw HTTP
# --------------------------------------------------------------------------------------------


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)

    def error_type(self) -> str:
        """The error code as botocore would derive it (header, then body code/__type)."""
        h = self.headers.get("x-amzn-errortype", "")
        if h:
            return h.split(":")[0].split("#")[-1]
        try:
            doc = self.json()
        except ValueError:
            return ""
        code = doc.get("code") or doc.get("Code") or doc.get("__type") or ""
        return code.split("#")[-1]

    def __repr__(self):
        return f"<HTTP {self.status} {self.headers} {self.body[:300]!r}>"


def raw_request(endpoint: str, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None, sign: bool = True, region: str = REGION,
                service: str = "vpc-lattice", host: str | None = None, timeout: float = 10) -> RawResponse:
    """Send one HTTP request. `path` is sent verbatim (already percent-encoded).

    When `sign` is set the request carries a SigV4 signature for `service`/`region` made with the
    suite's dummy credentials. `host` overrides the Host header (sent unsigned in that case).
    """
    if isinstance(body, str):
        body = body.encode()
    u = urllib.parse.urlsplit(endpoint)
    hdrs = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = "application/json"
    if sign:
        req = AWSRequest(method=method, url=f"{endpoint.rstrip('/')}{path}", data=body or b"", headers=hdrs)
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, region).add_auth(req)
        hdrs = dict(req.headers.items())
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else u.netloc)
        for k, v in hdrs.items():
            if k.lower() == "host":
                continue
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, resp.getheaders(), data)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# netns mode: what an installation leaves on the host, found by its name prefix
# --------------------------------------------------------------------------------------------


def namespaces(prefix: str) -> list[str]:
    """The network namespaces of installation `prefix`."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix + "-")]


def leftovers(prefix: str) -> list[str]:
    """What the host still holds of installation `prefix`: its namespaces, their files under
    /etc/netns, and links and addresses of the root namespace that name it (a veth whose peer is
    in one of its namespaces shows `link-netns <name>`)."""
    found = [f"namespace {n}" for n in namespaces(prefix)]
    if os.path.isdir("/etc/netns"):
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith(prefix + "-")]
    for what, cmd in [("link", ["ip", "-o", "link"]), ("address", ["ip", "-o", "addr"])]:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        found += [f"{what}: {line}" for line in out.splitlines() if prefix in line]
    return found


def links(ns: str | None = None) -> list[str]:
    """The names of namespace `ns`'s links (the root namespace's without one)."""
    where = ["-n", ns] if ns else []
    out = subprocess.run(["ip", *where, "-o", "link"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def remove_leftovers(prefix: str):
    """Removes what `leftovers(prefix)` finds: its namespaces, their files and root links."""
    for name in namespaces(prefix):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for name in os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []:
        if name.startswith(prefix + "-"):
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)
    for link in links():
        if link.startswith(prefix):
            subprocess.run(["ip", "link", "del", link], capture_output=True)


# --------------------------------------------------------------------------------------------
# Spawning servers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary():
    """Fail (or skip, when pointed at an external endpoint) if the trellis binary is missing."""
    if os.path.isfile(TRELLIS_BIN) and os.access(TRELLIS_BIN, os.X_OK):
        return TRELLIS_BIN
    msg = (f"trellis binary not found at {TRELLIS_BIN} (build it with `cargo build -p trellis`, "
           f"or set TRELLIS_BIN)")
    if os.environ.get("TRELLIS_ENDPOINT"):
        pytest.skip(msg + "; this test needs to start its own server")
    pytest.fail(msg, pytrace=False)


def quotas_toml(quotas: dict | None) -> str:
    if not quotas:
        return ""
    lines = ["[quotas]"] + [f"{k} = {int(v)}" for k, v in sorted(quotas.items())]
    return "\n".join(lines) + "\n"


class Etcd:
    """One etcd child process (Debian's etcd-server) on free loopback ports with a temporary data
    directory under `workdir`; `kill()` ends it by PID."""

    def __init__(self, workdir: Path):
        if shutil.which("etcd") is None:
            pytest.fail("no etcd binary on PATH (apt-get install etcd-server)", pytrace=False)
        self.dir = Path(tempfile.mkdtemp(prefix="etcd-", dir=workdir))
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            self.port, self.peer_port = a.getsockname()[1], b.getsockname()[1]
        client, peer = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer_port}"
        self.cmd = ["etcd", "--name=conformance", f"--data-dir={self.dir / 'data'}",
                    f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=conformance={peer}",
                    # A one-member cluster elects itself in milliseconds instead of a second.
                    "--heartbeat-interval=10", "--election-timeout=50"]
        self._spawn()

    def _spawn(self):
        self.log = open(self.dir / "etcd.log", "ab")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def restart(self):
        """Starts it again on the same data and ports (after `kill()`), and waits until healthy."""
        self.kill()
        self._spawn()
        return self.wait_healthy()

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    def wait_healthy(self):
        deadline = time.monotonic() + ETCD_START_TIMEOUT
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"etcd exited with {self.proc.returncode}:\n{self.log_tail()}"
            try:
                with opener.open(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if b'"true"' in r.read():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"etcd was not healthy within {ETCD_START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def call(self, path: str, body: dict) -> dict:
        """POST to etcd's JSON gateway."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as r:
            return json.loads(r.read())

    def compact(self) -> int:
        """Compacts away all history before the current revision; that revision."""
        revision = int(self.call("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def log_tail(self) -> str:
        return "\n".join((self.dir / "etcd.log").read_text(errors="replace").splitlines()[-30:])

    def kill(self):
        """SIGKILL by PID (no-op if already gone)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class TrellisServer:
    """One `trellis serve` child process on 127.0.0.1 with its own data directory."""

    def __init__(self, workdir: Path, quotas: dict | None = None, env: dict | None = None,
                 data_dir: Path | None = None, config_text: str | None = None,
                 network: str | None = "loopback"):
        self.bin = require_binary()
        # Tests written for loopback mode pin it (as root the default would be netns); None
        # passes no --network, for the tests of the default itself.
        self.network = network
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="data-", dir=self.workdir))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = config_text if config_text is not None else quotas_toml(quotas)
        self.config_path = None
        if text:
            self.config_path = self.workdir / "trellis.toml"
            self.config_path.write_text(text)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.port = None
        self.log_path = None
        self._log_file = None
        self.starts = 0
        # Its own etcd under TRELLIS_TEST_STORE=etcd, started with it and kept across restarts.
        self.etcd: Etcd | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
        env.update(self.extra_env)
        if TEST_STORE == "etcd" and "TRELLIS_STORE" not in env:
            if self.etcd is None:
                self.etcd = Etcd(self.workdir).wait_healthy()
            env["TRELLIS_STORE"] = self.etcd.url
        return env

    def spawn(self, port: int | None = None):
        self.port = port or free_port()
        self.starts += 1
        self.log_path = self.workdir / f"server-{self.port}-{self.starts}.log"
        self._log_file = open(self.log_path, "wb")
        cmd = [self.bin, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)]
        if self.network:
            cmd += ["--network", self.network]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=self._env())
        return self

    def start(self, timeout: float = HEALTH_TIMEOUT):
        """Spawn and wait for /_trellis/health; retries on a fresh port if the process dies early."""
        last_log = ""
        for _attempt in range(3):
            self.spawn()
            try:
                self.wait_healthy(timeout)
                return self
            except ServerDied as e:
                last_log = str(e)
                continue
        raise AssertionError(f"trellis serve did not start after 3 attempts:\n{last_log}")

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = Path(self.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def healthy(self) -> bool:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"{self.endpoint}/_trellis/health", timeout=2) as r:
                return r.status == 200
        except Exception:
            return False

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerDied(f"trellis serve exited with {self.proc.returncode} before becoming "
                                 f"healthy; log tail:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"GET /_trellis/health did not return 200 within {timeout:.0f}s; "
                             f"log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait (bounded), then SIGKILL if still running. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"trellis serve did not exit within {timeout}s of SIGTERM; "
                                 f"log tail:\n{self.log_tail()}")
        finally:
            self._close_log()

    def kill(self):
        """SIGKILL by PID (no-op if already gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._close_log()

    def close(self):
        """Kills it and the etcd it runs on, if any: the end of its life, not a restart."""
        self.kill()
        if self.etcd is not None:
            self.etcd.kill()
            self.etcd = None

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def client(self, service: str = "vpc-lattice", region: str = REGION, **config):
        return make_client(service, self.endpoint, region=region, **config)


class ServerDied(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Resource factory with best-effort cleanup
# --------------------------------------------------------------------------------------------


def forward(*tg_ids, weights=None):
    tgs = []
    for i, t in enumerate(tg_ids):
        entry = {"targetGroupIdentifier": t}
        if weights is not None:
            entry["weight"] = weights[i]
        tgs.append(entry)
    return {"forward": {"targetGroups": tgs}}


def fixed(status=404):
    return {"fixedResponse": {"statusCode": status}}


def path_match(prefix="/api", method=None):
    m = {"pathMatch": {"match": {"prefix": prefix}}}
    if method:
        m["method"] = method
    return {"httpMatch": m}


class Factory:
    """Creates uniquely named resources and deletes them again (best effort) at teardown."""

    def __init__(self, lattice, ec2):
        self.lattice = lattice
        self.ec2 = ec2
        self.created = []  # (kind, ids...)

    def track(self, kind, *ids):
        self.created.append((kind, *ids))

    # ---- EC2
    def vpc(self, cidr="10.0.0.0/16", tags=None) -> str:
        kw = {"CidrBlock": cidr}
        if tags:
            kw["TagSpecifications"] = [{"ResourceType": "vpc",
                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        vpc_id = self.ec2.create_vpc(**kw)["Vpc"]["VpcId"]
        self.track("vpc", vpc_id)
        return vpc_id

    def subnet(self, vpc_id, cidr="10.0.1.0/24") -> str:
        sid = self.ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)["Subnet"]["SubnetId"]
        self.track("subnet", sid)
        return sid

    def sg(self, vpc_id, name=None) -> str:
        gid = self.ec2.create_security_group(GroupName=name or uname("sg"), Description="conformance",
                                             VpcId=vpc_id)["GroupId"]
        self.track("sg", gid)
        return gid

    # ---- Lattice
    def sn(self, **kw) -> dict:
        kw.setdefault("name", uname("sn"))
        r = self.lattice.create_service_network(**kw)
        self.track("sn", r["id"])
        return r

    def service(self, **kw) -> dict:
        kw.setdefault("name", uname("svc"))
        r = self.lattice.create_service(**kw)
        self.track("service", r["id"])
        return r

    def tg(self, vpc=None, type="IP", config=None, **kw) -> dict:
        kw.setdefault("name", uname("tg"))
        if config is None and type != "LAMBDA":
            config = {"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc or self.vpc()}
        if config is not None:
            kw["config"] = config
        r = self.lattice.create_target_group(type=type, **kw)
        self.track("tg", r["id"])
        return r

    def listener(self, service_id, tg_id=None, **kw) -> dict:
        kw.setdefault("name", uname("l"))
        kw.setdefault("protocol", "HTTP")
        kw.setdefault("defaultAction", forward(tg_id) if tg_id else fixed(404))
        r = self.lattice.create_listener(serviceIdentifier=service_id, **kw)
        self.track("listener", service_id, r["id"])
        return r

    def rule(self, service_id, listener_id, priority, tg_id=None, prefix=None, **kw) -> dict:
        kw.setdefault("name", uname("r"))
        kw.setdefault("match", path_match(prefix or f"/p{priority}"))
        kw.setdefault("action", forward(tg_id) if tg_id else fixed(404))
        r = self.lattice.create_rule(serviceIdentifier=service_id, listenerIdentifier=listener_id,
                                     priority=priority, **kw)
        self.track("rule", service_id, listener_id, r["id"])
        return r

    def snva(self, sn_id, vpc_id, **kw) -> dict:
        r = self.lattice.create_service_network_vpc_association(
            serviceNetworkIdentifier=sn_id, vpcIdentifier=vpc_id, **kw)
        self.track("snva", r["id"])
        return r

    def snsa(self, sn_id, svc_id, **kw) -> dict:
        r = self.lattice.create_service_network_service_association(
            serviceNetworkIdentifier=sn_id, serviceIdentifier=svc_id, **kw)
        self.track("snsa", r["id"])
        return r

    def als(self, resource_id, destination=None, **kw) -> dict:
        dest = destination or f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{uname('lg')}"
        r = self.lattice.create_access_log_subscription(resourceIdentifier=resource_id,
                                                        destinationArn=dest, **kw)
        self.track("als", r["id"])
        return r

    # ---- cleanup
    RETRY_CODES = ("ConflictException", "DependencyViolation", "InvalidGroup.InUse")
    GONE_CODES = ("ResourceNotFoundException", "InvalidVpcID.NotFound", "InvalidSubnetID.NotFound",
                  "InvalidGroup.NotFound")

    def _try(self, fn, **kw) -> str:
        """'ok' (deleted or already gone), 'retry' (a dependant is still going away) or 'fail'."""
        try:
            fn(**kw)
            return "ok"
        except ClientError as e:
            code = error_code(e)
            if code in self.GONE_CODES:
                return "ok"
            return "retry" if code in self.RETRY_CODES else "fail"
        except Exception:
            return "fail"

    def cleanup(self):
        """Best effort, dependants first. Deletes refused because a dependant is still
        DELETE_IN_PROGRESS are retried for up to SETTLE_SECONDS. Nothing here fails a test."""
        la, ec2 = self.lattice, self.ec2
        order = ["als", "snsa", "snva", "rule", "listener", "service", "tg", "sn", "subnet", "sg", "vpc"]
        deleters = {
            "als": lambda i: self._try(la.delete_access_log_subscription, accessLogSubscriptionIdentifier=i[0]),
            "snsa": lambda i: self._try(la.delete_service_network_service_association,
                                        serviceNetworkServiceAssociationIdentifier=i[0]),
            "snva": lambda i: self._try(la.delete_service_network_vpc_association,
                                        serviceNetworkVpcAssociationIdentifier=i[0]),
            "rule": lambda i: self._try(la.delete_rule, serviceIdentifier=i[0], listenerIdentifier=i[1],
                                        ruleIdentifier=i[2]),
            "listener": lambda i: self._try(la.delete_listener, serviceIdentifier=i[0], listenerIdentifier=i[1]),
            "service": lambda i: self._try(la.delete_service, serviceIdentifier=i[0]),
            "tg": lambda i: self._try(la.delete_target_group, targetGroupIdentifier=i[0]),
            "sn": lambda i: self._try(la.delete_service_network, serviceNetworkIdentifier=i[0]),
            "subnet": lambda i: self._try(ec2.delete_subnet, SubnetId=i[0]),
            "sg": lambda i: self._try(ec2.delete_security_group, GroupId=i[0]),
            "vpc": lambda i: self._try(ec2.delete_vpc, VpcId=i[0]),
        }
        pending = list(self.created)
        self.created = []
        deadline = time.monotonic() + SETTLE_SECONDS
        while pending:
            retry = []
            for kind in order:
                for entry in reversed([e for e in pending if e[0] == kind]):
                    if deleters[kind](entry[1:]) == "retry":
                        retry.append(entry)
            if not retry or time.monotonic() >= deadline:
                return
            pending = retry
            time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# Status polling
# --------------------------------------------------------------------------------------------


def becomes_active(get, what: str, timeout: float = SETTLE_SECONDS) -> dict:
    """Poll `get()` until status is ACTIVE; only CREATE_/UPDATE_IN_PROGRESS may be seen before that."""
    seen = []

    def check():
        r = get()
        seen.append(r.get("status"))
        assert r.get("status") in ("CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "ACTIVE"), (
            f"{what}: unexpected status {r.get('status')!r} while waiting for ACTIVE")
        return r if r.get("status") == "ACTIVE" else None

    return wait_for(check, timeout, message=f"{what} to become ACTIVE (statuses seen: {seen[-3:]})")


def becomes_gone(client, get, what: str, resource_type: str | None = None, timeout: float = SETTLE_SECONDS,
                 allow_status=("DELETE_IN_PROGRESS",)):
    """Poll `get()` until it raises ResourceNotFoundException (optionally with resourceType)."""
    exc_cls = client.exceptions.ResourceNotFoundException

    def check():
        try:
            r = get()
        except exc_cls as e:
            if resource_type is not None:
                check_error(e, "ResourceNotFoundException", 404, resourceType=resource_type)
            return True
        st = r.get("status")
        if st is not None:
            assert st in allow_status, f"{what}: status {st!r} while being deleted (expected DELETE_IN_PROGRESS)"
        return False

    wait_for(check, timeout, message=f"{what} to disappear (GET -> ResourceNotFoundException)")


# --------------------------------------------------------------------------------------------
# Certificates (ACM), made with the openssl command line
# --------------------------------------------------------------------------------------------


def _openssl(directory: Path, *args: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"


def _new_key(directory: Path, path: str, kind: str) -> None:
    """`ec` (SEC1 `EC PRIVATE KEY`), `rsa` (PKCS#1 `RSA PRIVATE KEY`), `rsa8` and `ec8` (PKCS#8)."""
    if kind == "ec":
        _openssl(directory, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path)
    elif kind == "ec8":
        _openssl(directory, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    elif kind == "rsa":
        _openssl(directory, "genrsa", "-traditional", "-out", path, "2048")
    elif kind == "rsa8":
        _openssl(directory, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    else:
        raise ValueError(kind)


def make_certificate(names, key: str = "ec", ca: dict | None = None) -> dict:
    """A certificate for `names` (the first is its CN) and its key, PEM bytes; self-signed, or
    issued by `ca` (a `make_ca()` result), when `chain` is the CA's certificate."""
    directory = Path(tempfile.mkdtemp(prefix="trellis-cert-"))
    try:
        _new_key(directory, "key.pem", key)
        san = "subjectAltName=" + ",".join(f"DNS:{n}" for n in names)
        if ca is None:
            _openssl(directory, "req", "-x509", "-new", "-key", "key.pem", "-subj", f"/CN={names[0]}",
                     "-days", "30", "-addext", san, "-addext", "extendedKeyUsage=serverAuth", "-out", "cert.pem")
            chain = None
        else:
            (directory / "ca.pem").write_bytes(ca["cert"])
            (directory / "ca.key").write_bytes(ca["key"])
            (directory / "ext.cnf").write_text(f"{san}\nextendedKeyUsage=serverAuth\n"
                                               "keyUsage=digitalSignature,keyEncipherment\n")
            _openssl(directory, "req", "-new", "-key", "key.pem", "-subj", f"/CN={names[0]}", "-out", "leaf.csr")
            _openssl(directory, "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                     "-CAcreateserial", "-days", "30", "-extfile", "ext.cnf", "-out", "cert.pem")
            chain = ca["cert"]
        return {"cert": (directory / "cert.pem").read_bytes(), "key": (directory / "key.pem").read_bytes(),
                "chain": chain}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def make_ca(org: str = "Conformance CA") -> dict:
    """A certificate authority: its certificate and key, PEM bytes."""
    directory = Path(tempfile.mkdtemp(prefix="trellis-ca-"))
    try:
        _new_key(directory, "ca.key", "ec8")
        _openssl(directory, "req", "-x509", "-new", "-key", "ca.key", "-subj", f"/O={org}/CN={org} Root",
                 "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.pem")
        return {"cert": (directory / "ca.pem").read_bytes(), "key": (directory / "ca.key").read_bytes()}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def import_certificate(acm, names, key: str = "ec", **kwargs) -> str:
    """Imports a fresh self-signed certificate for `names`; its ARN."""
    c = make_certificate(names, key=key)
    return acm.import_certificate(Certificate=c["cert"], PrivateKey=c["key"], **kwargs)["CertificateArn"]
