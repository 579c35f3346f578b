"""Access logs, metrics and tracing (issue 8), black-box: access log subscriptions on a
service network and a service write one JSON object a line per request under the data
directory (README "Access logs"); `GET /_trellis/access-logs` and `trellis logs access` read
them back, each request once; the CloudWatch Logs read subset serves a log group's records to
boto3 and `aws logs filter-log-events`; `GET /_trellis/metrics` passes `promtool check metrics`
and counts known traffic; a W3C `traceparent` passes through, or the proxy starts one, and the
log records it. A destination that blocks (a FIFO nobody reads) and rotation never slow
requests: records are dropped and counted instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from support import ACCOUNT, REGION, fixed, forward, uname, wait_for
from test_dataplane import DataPlane, closed_port
from test_iam import find_aws

NODE = "obs-node"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def config(**proxy) -> str:
    lines = ["relaxed_health_checks = true", f'node = "{NODE}"', "", "[proxy]", "deregistration_delay_seconds = 2"]
    lines += [f"{k} = {v}" for k, v in proxy.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def dp(server_factory):
    plane = DataPlane(server_factory(config_text=config()))
    yield plane
    plane.close()


def http_get(url: str) -> tuple[int, dict, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def entries(dp, service=None, limit=None) -> list[dict]:
    q = []
    if service:
        q.append(f"service={service}")
    if limit:
        q.append(f"limit={limit}")
    status, headers, body = http_get(f"{dp.endpoint}/_trellis/access-logs?{'&'.join(q)}")
    assert status == 200, body
    assert headers.get("content-type") == "application/x-ndjson"
    return [json.loads(line) for line in body.decode().splitlines()]


def by_request(dp, service, request_ids, timeout=5.0) -> dict:
    """The entries of these requests, once all are written."""
    def found():
        got = {e["requestId"]: e for e in entries(dp, service, 1000)}
        return got if all(r in got for r in request_ids) else None
    return wait_for(found, timeout, interval=0.1, message=f"access log entries for {request_ids}")


def metrics(endpoint: str) -> str:
    status, headers, body = http_get(f"{endpoint}/_trellis/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain; version=0.0.4")
    return body.decode()


def sample(text: str, name: str, **labels) -> float | None:
    """The value of the series `name{labels}` (labels in any order, all given)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if have == {k: str(v) for k, v in labels.items()}:
            return float(m.group(4))
    return None


def lattice_arn(kind: str, rid: str) -> str:
    return f"arn:aws:vpc-lattice:{REGION}:{ACCOUNT}:{kind}/{rid}"


def mesh_with_logs(dp, health=None):
    """A served service (target `app` behind `tg`), a fixed 404 under /fixed, a target that
    refuses connections under /broken, and subscriptions: the network's to CloudWatch Logs and
    Firehose, the service's to S3 (with a prefix)."""
    vpc = dp.res.vpc()
    app = dp.target("app")
    tg = dp.tg(vpc, health=health)["id"]
    dp.register(tg, app)
    broken = dp.tg(vpc, health={"enabled": False})["id"]
    refused = closed_port()
    dp.register(broken, ("127.0.0.1", refused))
    m = dp.mesh(forward(tg), vpc=vpc)
    svc, listener = m["svc"]["id"], m["listener"]["id"]
    dp.res.rule(svc, listener, 1, match={"httpMatch": {"pathMatch": {"match": {"prefix": "/fixed"}}}}, action=fixed(404))
    dp.res.rule(svc, listener, 2, match={"httpMatch": {"pathMatch": {"match": {"prefix": "/broken"}}}},
                action=forward(broken))
    group, bucket, stream = f"/aws/vpclattice/{uname('obs')}", uname("bucket"), uname("fh")
    dests = {
        "cw": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}",
        "s3": f"arn:aws:s3:::{bucket}/lattice/logs",
        "fh": f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{stream}",
    }
    als = {
        "cw": dp.res.als(m["sn"]["id"], destination=dests["cw"], serviceNetworkLogType="SERVICE")["id"],
        "fh": dp.res.als(m["sn"]["id"], destination=dests["fh"])["id"],
        "s3": dp.res.als(svc, destination=dests["s3"])["id"],
    }
    m.update(als=als, tg=tg, broken=broken, refused=refused, app=app, group=group, bucket=bucket, stream=stream, dests=dests,
             c=dp.client(vpc))
    dp.wait_serving(m["c"], m["host"], 404, path="/fixed/x")
    # Every subscription has reached the proxy once a request lands in every destination.
    files = destination_files(dp, m)

    def logged_everywhere():
        rid = m["c"].request("GET", "/fixed/ready", m["host"]).headers["x-amzn-requestid"]
        # A request made before any subscription arrived is never logged: ask again then.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if all(p.exists() and rid in p.read_text() for p in files.values()):
                return True
            time.sleep(0.02)
        return False
    wait_for(logged_everywhere, 10, interval=0.1, message="every subscription in the data plane")
    return m


def enc(name: str) -> str:
    """A name as one path component (README "Access logs")."""
    out = ""
    for ch in name.encode():
        c = chr(ch)
        out += c if (c.isascii() and (c.isalnum() or c in "-_.")) else f"%{ch:02X}"
    return out


def destination_files(dp, m) -> dict:
    data = Path(dp.server.data_dir) / "access-logs"
    return {
        "cw": data / "cloudwatch" / REGION / ACCOUNT / enc(m["group"]) / f"{NODE}.log",
        "s3": data / "s3" / m["bucket"] / "lattice" / "logs" / f"{NODE}.log",
        "fh": data / "firehose" / REGION / ACCOUNT / m["stream"] / f"{NODE}.log",
    }


def test_access_log_entries_field_by_field(dp):
    m = mesh_with_logs(dp)
    c, host, svc, sn = m["c"], m["host"], m["svc"]["id"], m["sn"]["id"]
    ok = c.request("GET", "/ok?x=1", host, headers={"User-Agent": "obs-test/1", "traceparent": TRACEPARENT})
    assert ok.target == "app"
    assert ok.seen("traceparent") == [TRACEPARENT], "a valid traceparent passes through unchanged"
    started = c.request("GET", "/started", host)
    assert started.target == "app"
    made = started.seen("traceparent")
    assert len(made) == 1 and TRACE_RE.match(made[0]), f"the proxy starts a trace: {made}"
    fixed_r = c.request("GET", "/fixed/y", host)
    assert fixed_r.status == 404
    broken_r = c.request("GET", "/broken", host)
    assert broken_r.status in (502, 503), broken_r
    # Denied: the service turns AWS_IAM without a policy.
    dp.lattice.update_service(serviceIdentifier=svc, authType="AWS_IAM")
    denied = dp.wait_serving(c, host, 403, path="/denied")
    rid = {k: r.headers["x-amzn-requestid"] for k, r in
           {"ok": ok, "started": started, "fixed": fixed_r, "broken": broken_r, "denied": denied}.items()}
    got = by_request(dp, svc, list(rid.values()))

    vpc_id = m["vpc"]
    common = {
        "serviceNetworkArn": lattice_arn("servicenetwork", sn),
        "serviceArn": lattice_arn("service", svc),
        "sourceVpcArn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/{vpc_id}",
        "sourceVpcId": vpc_id,
        "listenerId": m["listener"]["id"],
        "listenerType": "HTTP",
        "requestMethod": "GET",
        "protocol": "HTTP/1.1",
        "hostHeader": host,
        "serverNameIndication": "-",
        "sslCipher": "-",
        "tlsVersion": "-",
        "callerX509IssuerOU": "-",
        "callerX509SubjectCN": "-",
        "callerX509SANNameCN": "-",
        "callerX509SANDNS": "-",
        "callerX509SANURI": "-",
    }
    for name, e in ((k, got[v]) for k, v in rid.items()):
        for k, v in common.items():
            assert e[k] == v, f"{name}: {k} = {e[k]!r}, want {v!r}"
        assert ISO_RE.match(e["startTime"]), e["startTime"]
        assert re.match(r"^127\.\d+\.\d+\.\d+:\d+$", e["sourceIpPort"]), e["sourceIpPort"]
        assert e["requestId"] == rid[name]
        for k in ("bytesReceived", "bytesSent", "duration", "requestToTargetDuration", "responseFromTargetDuration"):
            assert isinstance(e[k], int) and e[k] >= 0, f"{name}: {k} = {e[k]!r}"
        assert e["bytesReceived"] > 0 and e["bytesSent"] > 0, name

    ok_e = got[rid["ok"]]
    assert ok_e["requestPath"] == "/ok?x=1"
    assert ok_e["responseCode"] == 200
    assert ok_e["userAgent"] == "obs-test/1"
    assert ok_e["targetGroupArn"] == lattice_arn("targetgroup", m["tg"])
    assert ok_e["destinationVpcId"] == vpc_id
    assert ok_e["targetIpPort"] == f"127.0.0.1:{m['app'].port}"
    assert ok_e["traceparent"] == TRACEPARENT
    assert ok_e["authDeniedReason"] == "-" and ok_e["failureReason"] == "-"
    assert ok_e["callerPrincipal"] == "-" and ok_e["resolvedUser"] == "-"
    assert ok_e["bytesSent"] >= len(ok.body)

    assert got[rid["started"]]["traceparent"] == made[0], "the log records the trace the proxy started"

    fixed_e = got[rid["fixed"]]
    assert fixed_e["responseCode"] == 404 and fixed_e["requestPath"] == "/fixed/y"
    assert fixed_e["targetGroupArn"] == "-" and fixed_e["targetIpPort"] == "-"
    assert fixed_e["requestToTargetDuration"] == 0 and fixed_e["responseFromTargetDuration"] == 0
    assert fixed_e["failureReason"] == "-" and fixed_e["traceparent"] == "-"

    broken_e = got[rid["broken"]]
    assert broken_e["responseCode"] == broken_r.status
    assert broken_e["targetGroupArn"] == lattice_arn("targetgroup", m["broken"])
    assert broken_e["failureReason"] == "TargetConnectionError", broken_e["failureReason"]
    assert broken_e["targetIpPort"] == f"127.0.0.1:{m['refused']}"

    denied_e = got[rid["denied"]]
    assert denied_e["responseCode"] == 403
    assert denied_e["authDeniedReason"] == "Service"
    assert denied_e["failureReason"] == "ClientAccessDenied"
    assert denied_e["targetGroupArn"] == "-" and denied_e["targetIpPort"] == "-"

    # Every destination got every record; the endpoint gives each request once.
    files = destination_files(dp, m)
    for kind, path in files.items():
        ids = [json.loads(line)["requestId"] for line in path.read_text().splitlines()]
        for r in rid.values():
            assert ids.count(r) == 1, f"{kind} ({path}) has {r} {ids.count(r)} times"
    listed = [e["requestId"] for e in entries(dp, svc, 1000)]
    assert len(listed) == len(set(listed)), "one entry per request, whatever the destinations"
    # Oldest first; limit keeps the newest.
    newest = entries(dp, svc, 2)
    assert [e["requestId"] for e in newest] == listed[-2:]
    assert entries(dp, "svc-00000000000000000") == []

    # `trellis logs access` prints the same, one JSON object a line.
    out = subprocess.run([dp.server.bin, "logs", "access", "--service", svc, "--limit", "1000",
                          "--endpoint", dp.endpoint], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["requestId"] for line in out.stdout.splitlines()] == listed


def test_logs_access_follow_prints_new_entries(dp):
    m = mesh_with_logs(dp)
    proc = subprocess.Popen([dp.server.bin, "logs", "access", "--follow", "--limit", "1",
                             "--endpoint", dp.endpoint], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        time.sleep(1.5)
        rids = [m["c"].request("GET", f"/follow/{i}", m["host"]).headers["x-amzn-requestid"] for i in range(3)]

        def printed():
            seen = [json.loads(line)["requestId"] for line in list(lines) if line.strip()]
            return seen if all(r in seen for r in rids) else None
        seen = wait_for(printed, 10, interval=0.2, message="the new entries printed")
        time.sleep(1.5)  # another poll: nothing is printed twice
        seen = [json.loads(line)["requestId"] for line in list(lines) if line.strip()]
        assert len(seen) == len(set(seen)), seen
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_cloudwatch_logs_read_api(dp, tmp_path):
    m = mesh_with_logs(dp)
    rids = [m["c"].request("GET", "/fixed/cw", m["host"]).headers["x-amzn-requestid"] for _ in range(3)]
    rids.append(m["c"].request("GET", "/ok", m["host"]).headers["x-amzn-requestid"])
    by_request(dp, m["svc"]["id"], rids)
    logs = dp.server.client("logs")
    group = m["group"]
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/vpclattice/")["logGroups"]
    mine = [g for g in groups if g["logGroupName"] == group]
    assert len(mine) == 1, groups
    assert mine[0]["arn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:*"
    assert mine[0]["logGroupArn"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}"
    assert mine[0]["storedBytes"] > 0
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [NODE]
    assert streams[0]["lastEventTimestamp"] >= streams[0]["firstEventTimestamp"] > 0
    events = logs.get_log_events(logGroupName=group, logStreamName=NODE, startFromHead=True)["events"]
    ids = [json.loads(e["message"])["requestId"] for e in events]
    assert all(r in ids for r in rids)
    filtered = logs.filter_log_events(logGroupName=group, filterPattern="{ $.responseCode = 404 }")
    fids = [json.loads(e["message"])["requestId"] for e in filtered["events"]]
    assert set(rids[:3]) <= set(fids) and rids[3] not in fids
    assert filtered["searchedLogStreams"] == [{"logStreamName": NODE, "searchedCompletely": True}]
    assert all(e["logStreamName"] == NODE and e["eventId"] for e in filtered["events"])
    # Paginated by the SDK's paginator, each event once.
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, PaginationConfig={"PageSize": 1})
    paged = [json.loads(e["message"])["requestId"] for p in pages for e in p["events"]]
    assert sorted(paged) == sorted(ids)
    # AWS's errors.
    for call, code in [
        (lambda: logs.describe_log_streams(logGroupName="no-such-group"), "ResourceNotFoundException"),
        (lambda: logs.get_log_events(logGroupName=group, logStreamName="nope"), "ResourceNotFoundException"),
        (lambda: logs.filter_log_events(logGroupName="no-such-group"), "ResourceNotFoundException"),
        (lambda: logs.filter_log_events(logGroupName=group, filterPattern="{ $.x = "), "InvalidParameterException"),
    ]:
        with pytest.raises(logs.exceptions.ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == code
    nv = dp.server.client("logs", parameter_validation=False)
    with pytest.raises(nv.exceptions.ClientError) as err:
        nv.describe_log_groups(limit=0)
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"

    # The aws CLI.
    aws = find_aws()
    assert aws, "the aws CLI v1 is required (pip install -r conformance/requirements.txt)"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret",
               AWS_DEFAULT_REGION=REGION)
    proc = subprocess.run([aws, "--endpoint-url", dp.endpoint, "--output", "json", "logs", "filter-log-events",
                           "--log-group-name", group], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cli_ids = [json.loads(e["message"])["requestId"] for e in json.loads(proc.stdout)["events"]]
    assert sorted(cli_ids) == sorted(ids)


def test_metrics_pass_promtool_and_count_known_traffic(server_factory):
    mport = free_port()
    server = server_factory(config_text=f'metrics_listen = "127.0.0.1:{mport}"\n' + config())
    dp = DataPlane(server)
    try:
        fast = {"enabled": True, "protocol": "HTTP", "path": "/healthz", "healthCheckIntervalSeconds": 1,
                "healthCheckTimeoutSeconds": 1, "healthyThresholdCount": 2, "unhealthyThresholdCount": 2}
        m = mesh_with_logs(dp, health=fast)
        c, host = m["c"], m["host"]
        sn, svc, tg = m["sn"]["id"], m["svc"]["id"], m["tg"]
        dp.wait_serving(c, host, "app")
        wait_for(lambda: sample(metrics(dp.endpoint), "trellis_targets", target_group=tg, state="healthy") == 1,
                 15, interval=0.2, message="the target healthy")
        before = metrics(dp.endpoint)
        base = lambda code, group=tg: sample(before, "trellis_requests_total", service_network=sn, service=svc,
                                             target_group=group, code=code) or 0
        ok0, fixed0 = base("2xx"), base("4xx", "")
        for _ in range(5):
            assert c.request("GET", "/ok", host).target == "app"
        for _ in range(2):
            assert c.request("GET", "/fixed/m", host).status == 404
        text = metrics(dp.endpoint)
        promtool = shutil.which("promtool")
        assert promtool, "promtool is required (Debian package prometheus; scripts/test installs it)"
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        got = lambda name, **labels: sample(text, name, **labels)
        assert got("trellis_requests_total", service_network=sn, service=svc, target_group=tg, code="2xx") == ok0 + 5
        assert got("trellis_requests_total", service_network=sn, service=svc, target_group="",
                   code="4xx") == fixed0 + 2
        assert got("trellis_auth_denies_total", service_network=sn, service=svc) == 0
        count = got("trellis_request_duration_seconds_count", service_network=sn, service=svc, target_group=tg)
        assert count >= ok0 + 5
        assert got("trellis_request_duration_seconds_bucket", service_network=sn, service=svc, target_group=tg,
                   le="+Inf") == count
        assert got("trellis_target_response_duration_seconds_count", service_network=sn, service=svc,
                   target_group=tg) >= 5
        assert got("trellis_connections_total", service_network=sn, service=svc) >= 1
        assert got("trellis_connections_active", service_network=sn, service=svc) >= 1
        assert got("trellis_targets", target_group=tg, state="healthy") == 1
        assert got("trellis_config_revision") > 0
        assert got("trellis_health_checks_total") > 0
        assert got("trellis_snapshot_apply_duration_seconds_count") > 0
        # The writer takes records in batches: the count follows within moments.
        wait_for(lambda: (sample(metrics(dp.endpoint), "trellis_access_log_records_written_total") or 0) >= 8, 5,
                 interval=0.05, message="the records written counted")
        assert got("trellis_access_log_records_dropped_total") == 0
        # Labels are bounded: no per-request label anywhere.
        assert not re.search(r'(path|request_id|client|source_ip)="', text)
        # Auth denials: counted, and as 4xx of no target group.
        dp.lattice.update_service(serviceIdentifier=svc, authType="AWS_IAM")
        dp.wait_serving(c, host, 403, path="/denied")
        for _ in range(3):
            assert c.request("GET", "/denied", host).status == 403
        after = metrics(dp.endpoint)
        denies = sample(after, "trellis_auth_denies_total", service_network=sn, service=svc)
        assert denies >= 4
        assert sample(after, "trellis_requests_total", service_network=sn, service=svc, target_group="",
                      code="4xx") == fixed0 + 2 + denies
        # --metrics-listen serves the same metrics.
        other = metrics(f"http://127.0.0.1:{mport}")
        series = dict(service_network=sn, service=svc, target_group="", code="4xx")
        assert sample(other, "trellis_requests_total", **series) == sample(after, "trellis_requests_total", **series)
    finally:
        dp.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(c, host, path, n) -> list[float]:
    out = []
    for i in range(n):
        t = time.monotonic()
        r = c.request("GET", f"{path}/{i}", host)
        out.append(time.monotonic() - t)
        assert r.status == 404, r
    return out


def test_rotation_keeps_files_bounded(server_factory):
    dp = DataPlane(server_factory(config_text=config(access_log_max_file_bytes=4096, access_log_keep_files=2)))
    try:
        m = mesh_with_logs(dp)
        rids = [m["c"].request("GET", f"/fixed/rot/{i}", m["host"]).headers["x-amzn-requestid"] for i in range(60)]
        by_request(dp, m["svc"]["id"], rids[-1:])
        path = destination_files(dp, m)["cw"]
        wait_for(lambda: path.with_name(f"{NODE}.log.2").exists(), 5, message="two rotations")
        assert not path.with_name(f"{NODE}.log.3").exists(), "only keep_files rotated files are kept"
        for p in (path, path.with_name(f"{NODE}.log.1"), path.with_name(f"{NODE}.log.2")):
            assert p.stat().st_size <= 4096, p
        # The newest records are in the current file, the ones before in .1, whole lines each.
        current = [json.loads(line)["requestId"] for line in path.read_text().splitlines()]
        older = [json.loads(line)["requestId"] for line in path.with_name(f"{NODE}.log.1").read_text().splitlines()]
        assert current and current[-1] == rids[-1]
        assert rids.index(older[-1]) + 1 == rids.index(current[0])
        # GetLogEvents reads the stream across its files, oldest first.
        logs = dp.server.client("logs")
        events = logs.get_log_events(logGroupName=m["group"], logStreamName=NODE, startFromHead=True)["events"]
        ids = [json.loads(e["message"])["requestId"] for e in events]
        assert ids == [r for r in ids if r in rids] and ids[-len(current):] == current
    finally:
        dp.close()


def test_a_blocked_destination_slows_no_request(server_factory):
    dp = DataPlane(server_factory(config_text=config(access_log_queue=256)))
    try:
        m = mesh_with_logs(dp)
        c, host = m["c"], m["host"]
        warm = timed(c, host, "/fixed/warm", 50)
        by_request(dp, m["svc"]["id"], [c.request("GET", "/fixed/mark", host).headers["x-amzn-requestid"]])
        # A new destination whose file is a FIFO nobody reads: the writer blocks opening it.
        fifo_dir = Path(dp.server.data_dir) / "access-logs" / "s3" / (bucket := uname("slow"))
        fifo_dir.mkdir(parents=True)
        fifo = fifo_dir / f"{NODE}.log"
        os.mkfifo(fifo)
        dp.lattice.update_access_log_subscription(accessLogSubscriptionIdentifier=m["als"]["s3"],
                                                  destinationArn=f"arn:aws:s3:::{bucket}")
        # Once the subscription is in the data plane the writer is stuck on the FIFO: every
        # record from then on is dropped (the queue is full).
        def dropped():
            return sample(metrics(dp.endpoint), "trellis_access_log_records_dropped_total") or 0

        def stuck():
            before = dropped()
            timed(c, host, "/fixed/fill", 5)
            return dropped() - before == 5
        wait_for(stuck, 10, interval=0.01, message="records dropped while the writer is blocked")
        before = dropped()
        slow = timed(c, host, "/fixed/blocked", 300)
        assert max(slow) < 1.0, f"a request took {max(slow):.3f}s"
        assert statistics.median(slow) < statistics.median(warm) * 3 + 0.02, (statistics.median(slow),
                                                                             statistics.median(warm))
        assert dropped() - before == 300, "each record the blocked writer could not take is counted"
        # Unblock the writer: it goes on, and new records are written again.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            sent = set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.read(fd, 1 << 16)
                except BlockingIOError:
                    pass
                sent.add(c.request("GET", "/fixed/after", host).headers["x-amzn-requestid"])
                if sent & {e["requestId"] for e in entries(dp, m["svc"]["id"], 1000)}:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the writer did not resume")
        finally:
            os.close(fd)
    finally:
        dp.close()


def test_stopping_the_server_writes_its_last_records(dp):
    """SIGTERM: the records of the requests that ended just before are in the files when the
    process has exited (the writer takes a round every 20 ms; the last one is not lost), and
    the blocks allocated ahead of the writes are given back."""
    m = mesh_with_logs(dp)
    c, host = m["c"], m["host"]
    rids = [c.request("GET", f"/fixed/last/{i}", host).headers["x-amzn-requestid"] for i in range(100)]
    c.close()
    assert dp.server.stop() == 0
    for name, path in destination_files(dp, m).items():
        logged = {json.loads(line)["requestId"] for line in path.read_text().splitlines()}
        missing = [r for r in rids if r not in logged]
        assert not missing, f"{name}: {len(missing)} of the last {len(rids)} records missing"
        st = path.stat()
        assert st.st_blocks * 512 < st.st_size + (64 << 10), f"{name}: {st.st_blocks * 512} bytes of blocks held"


def test_https_and_http2_entries_carry_tls_details_and_traces(dp, tmp_path):
    from test_https import curl, https_mesh, trellis_ca
    ca = tmp_path / "ca.pem"
    ca.write_text(trellis_ca(dp.endpoint))
    m = https_mesh(dp)
    dp.res.als(m["svc"]["id"], destination=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{uname('tls')}")

    def logged(*extra):
        out = curl(m, str(ca), "-D", "-", *extra)
        if out.returncode != 0:
            return None
        rid = re.search(r"(?im)^x-amzn-requestid: *(\S+)", out.stdout)
        if not rid:
            return None
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            got = {e["requestId"]: e for e in entries(dp, m["svc"]["id"], 1000)}
            if rid.group(1) in got:
                return got[rid.group(1)], out.stdout
            time.sleep(0.02)
        return None

    h1, _ = wait_for(lambda: logged("--http1.1", "--tlsv1.2", "--tls-max", "1.2"), 10, interval=0.1,
                     message="an HTTPS request logged")
    assert h1["protocol"] == "HTTP/1.1" and h1["listenerType"] == "HTTPS"
    assert h1["tlsVersion"] == "TLSv1.2"
    assert re.match(r"^ECDHE-(RSA|ECDSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)$", h1["sslCipher"]), h1
    assert h1["serverNameIndication"] == m["host"]
    assert h1["responseCode"] == 200 and h1["targetIpPort"] == f"127.0.0.1:{m['target'].port}"
    h2, body = logged("--http2", "--tlsv1.3", "-H", f"traceparent: {TRACEPARENT}")
    assert h2["protocol"] == "HTTP/2.0" and h2["tlsVersion"] == "TLSv1.3"
    assert h2["sslCipher"] in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
    assert h2["serverNameIndication"] == m["host"] and h2["responseCode"] == 200
    assert h2["traceparent"] == TRACEPARENT
    assert f'"traceparent", "{TRACEPARENT}"' in body, "the target got the client's trace"
    h2_started, body = logged("--http2")
    assert TRACE_RE.match(h2_started["traceparent"]) and h2_started["traceparent"] != TRACEPARENT
    assert h2_started["traceparent"] in body, "the target got the trace the proxy started"


def test_signed_callers_are_recorded_as_their_principal(dp):
    from test_auth_enforcement import policy, root_credentials, served_service, signed_get
    root = root_credentials(dp)
    m = served_service(dp)
    svc, host, c = m["svc"]["id"], m["host"], m["c"]
    dp.res.als(svc, destination=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{uname('auth')}")
    dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=policy({
        "Effect": "Allow", "Principal": "*", "Action": "vpc-lattice-svcs:Invoke", "Resource": "*",
        "Condition": {"StringNotEquals": {"aws:PrincipalType": "Anonymous"}}}))
    dp.lattice.update_service(serviceIdentifier=svc, authType="AWS_IAM")
    dp.wait_serving(c, host, 403, path="/anonymous")

    def signed_and_logged():
        status, body = signed_get(m["address"], m["port"], host, "/signed", root["accessKeyId"],
                                  root["secretAccessKey"])
        if status != 200:
            return None
        rid = {k.lower(): v for k, v in json.loads(body)["headers"]}["x-amzn-requestid"]
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            got = {e["requestId"]: e for e in entries(dp, svc, 1000)}
            if rid in got:
                return got[rid]
            time.sleep(0.02)
        return None
    e = wait_for(signed_and_logged, 10, interval=0.1, message="a signed request logged")
    assert e["callerPrincipal"] == root["arn"] and e["resolvedUser"] == root["arn"]
    assert e["callerPrincipalOrgID"] == "o-trellis0000"
    assert e["authDeniedReason"] == "-" and e["responseCode"] == 200
    anonymous = c.request("GET", "/anonymous", host)
    assert anonymous.status == 403
    denied = by_request(dp, svc, [anonymous.headers["x-amzn-requestid"]])[anonymous.headers["x-amzn-requestid"]]
    assert denied["callerPrincipal"] == "-" and denied["authDeniedReason"] == "Service"
