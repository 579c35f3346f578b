"""Several Trellis nodes over a three-member etcd (`trellis serve --role …`): an API node that
takes the writes, and two nodes that each run the data plane and ECS tasks, each on its own
ingress range (loopback mode). What is written through the API node is served by both proxy nodes; DNS on
either lists both nodes' addresses; the ECS scheduler spreads tasks over both tasks nodes; and when
one node and an etcd member are killed (`kill -9`), the node's record goes with its lease, DNS
stops naming it, its tasks are marked STOPPED and replaced on the other node, and a client that
retries on the other address loses nothing. Killing an etcd member and an API node in the middle of
a stream of writes loses no acknowledged write.

The tests start their own etcd and kill everything they start by PID.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
import urllib.error
import urllib.request

import pytest

import support
from support import TrellisServer, make_client, wait_for
from test_dataplane import dns_query
from test_ecs_lattice import echo_service

TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ecs.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
MANAGED = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice"
CONFIG = "relaxed_health_checks = true\n[proxy]\nderegistration_delay_seconds = 5\n"


class EtcdCluster:
    """Three etcd members on loopback, each its own process and data directory."""

    def __init__(self, workdir):
        self.members = []
        ports = [(support.free_port(), support.free_port()) for _ in range(3)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        # A directory of its own: a member must never find another cluster's data.
        base = Path(tempfile.mkdtemp(prefix="etcd-cluster-", dir=workdir))
        for i, (client, peer) in enumerate(ports):
            directory = base / f"m{i}"
            directory.mkdir(parents=True, exist_ok=True)
            log = open(directory / "etcd.log", "ab")
            proc = subprocess.Popen(
                ["etcd", f"--name=m{i}", f"--data-dir={directory / 'data'}",
                 f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
                 f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                 f"--initial-cluster={initial}", "--initial-cluster-state=new",
                 "--heartbeat-interval=50", "--election-timeout=500"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            self.members.append({"proc": proc, "port": client, "log": log, "dir": directory})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def healthy():
            for m in self.members:
                try:
                    with opener.open(f"http://127.0.0.1:{m['port']}/health", timeout=2) as r:
                        if b'"true"' not in r.read():
                            return False
                except OSError:
                    return False
            return True
        try:
            wait_for(healthy, 30, interval=0.1, message="a three-member etcd cluster")
        except AssertionError as e:
            tails = "\n".join((m["dir"] / "etcd.log").read_text(errors="replace")[-1500:] for m in self.members)
            self.close()
            raise AssertionError(f"{e}\n{tails}") from None

    def call(self, path: str, body: dict) -> dict:
        """POST to the JSON gateway of the first member that answers."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for m in self.members:
            if m["proc"].poll() is not None:
                continue
            req = urllib.request.Request(f"http://127.0.0.1:{m['port']}{path}", data=json.dumps(body).encode())
            try:
                with opener.open(req, timeout=10) as r:
                    return json.loads(r.read())
            except OSError:
                continue
        raise AssertionError("no etcd member answers")

    def url(self, order) -> str:
        return "etcd://" + ",".join(f"127.0.0.1:{self.members[i]['port']}" for i in order)

    def kill(self, i):
        m = self.members[i]
        if m["proc"].poll() is None:
            m["proc"].kill()
            m["proc"].wait(10)

    def close(self):
        for i, m in enumerate(self.members):
            self.kill(i)
            m["log"].close()



class Cluster:
    """Three etcd members; three Trellis nodes, each listing the members in its own order."""

    def __init__(self, workdir):
        self.etcd = EtcdCluster(workdir)
        self.nodes: dict[str, TrellisServer] = {}
        for i, (name, role) in enumerate((("api", "api"), ("n1", "proxy,tasks"), ("n2", "proxy,tasks"))):
            order = [(i + k) % 3 for k in range(3)]
            env = {"TRELLIS_STORE": self.etcd.url(order), "TRELLIS_ROLE": role, "TRELLIS_NODE": name}
            self.nodes[name] = TrellisServer(workdir / name, env=env, config_text=CONFIG).start()
        ep = self.nodes["api"].endpoint
        self.ecs, self.iam = make_client("ecs", ep), make_client("iam", ep)
        self.ec2, self.lattice = make_client("ec2", ep), make_client("vpc-lattice", ep)

    def close(self):
        for node in self.nodes.values():
            node.kill()
        self.etcd.close()

    def setup(self, desired=2):
        e = self.ec2
        self.vpc_a = e.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.vpc_b = e.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
        subnet = e.create_subnet(VpcId=self.vpc_a, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        role = self.iam.create_role(RoleName="ecsInfra", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
        self.iam.attach_role_policy(RoleName="ecsInfra", PolicyArn=MANAGED)
        echo = echo_service(self.lattice, self.vpc_a, self.vpc_b)
        tg = echo["tg"]
        self.tg = tg["id"]
        self.svc, self.dns = echo["svc"]["id"], echo["svc"]["dnsEntry"]["domainName"]
        self.listener = echo["listener"]
        self.ecs.create_cluster(clusterName="c1")
        self.ecs.register_task_definition(
            family="echo", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "echo", "image": "trellis/echo:latest",
                                   "portMappings": [{"containerPort": 8080, "name": "http"}]}])
        self.ecs.create_service(
            cluster="c1", serviceName="echo", taskDefinition="echo", desiredCount=desired, launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet]}},
            vpcLatticeConfigurations=[{"roleArn": role, "targetGroupArn": tg["arn"], "portName": "http"}])

    def ingress(self, node: str) -> dict:
        return support.raw_request(self.nodes[node].endpoint, "GET", f"/_trellis/vpcs/{self.vpc_b}/ingress").json()

    def get(self, node: str, path: str = "/"):
        """One request from VPC-B through `node`'s ingress address: (status, body)."""
        ingress = self.ingress(node)
        port = 80 + ingress["lowPortOffset"]
        req = urllib.request.Request(f"http://{ingress['address']}:{port}{path}", headers={"Host": self.dns})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def nodes_view(self, via: str = "api") -> dict | None:
        """The live nodes by name; None when the store could not be read (an etcd election)."""
        resp = support.raw_request(self.nodes[via].endpoint, "GET", "/_trellis/nodes")
        if resp.status != 200:
            return None
        return {n["node"]: n for n in resp.json()["nodes"]}

    def tasks(self, status="RUNNING"):
        arns = self.ecs.list_tasks(cluster="c1", desiredStatus=status)["taskArns"]
        return self.ecs.describe_tasks(cluster="c1", tasks=arns)["tasks"] if arns else []

    def placements(self) -> dict:
        """Task ARN → node, as the scheduler recorded them in etcd."""
        import base64
        prefix = base64.b64encode(b"cluster/task/").decode()
        end = base64.b64encode(b"cluster/task0").decode()
        kvs = self.etcd.call("/v3/kv/range", {"key": prefix, "range_end": end}).get("kvs", [])
        return {base64.b64decode(kv["key"]).decode()[len("cluster/task/"):]: base64.b64decode(kv["value"]).decode()
                for kv in kvs}

    def health_records(self) -> dict:
        """(target ID, port) → the nodes that recorded its health, from etcd."""
        import base64
        prefix = f"r/{support.REGION}/{support.ACCOUNT}/health/{self.tg}/"
        end = prefix[:-1] + "0"
        kvs = self.etcd.call("/v3/kv/range", {"key": base64.b64encode(prefix.encode()).decode(),
                                              "range_end": base64.b64encode(end.encode()).decode()}).get("kvs", [])
        out = {}
        for kv in kvs:
            target, port, node = base64.b64decode(kv["key"]).decode()[len(prefix):].rsplit("/", 2)
            out.setdefault((target, int(port)), set()).add(node)
        return out

    def healthy(self):
        items = self.lattice.list_targets(targetGroupIdentifier=self.tg)["items"]
        return sorted(t["id"] for t in items if t["status"] == "HEALTHY")


@pytest.fixture
def cluster(workdir):
    if shutil.which("etcd") is None:
        pytest.skip("no etcd binary on PATH (apt-get install etcd-server)")
    c = Cluster(workdir)
    try:
        yield c
    finally:
        c.close()


def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - polled until it works
        return None


def test_nodes_have_their_roles_and_only_api_nodes_serve_the_apis(cluster):
    view = wait_for(lambda: v if len(v := cluster.nodes_view() or {}) == 3 else None, 10, message="three nodes")
    assert view["api"]["roles"] == ["api"] and view["n1"]["roles"] == ["proxy", "tasks"], view
    assert all(n["reachable"] for n in view.values()), view
    assert view["n1"]["ingressRange"] != view["n2"]["ingressRange"], "each proxy node has its own range"
    assert "lag" in view["n1"] and "lag" not in view["api"], view
    # `trellis status --nodes` prints them.
    out = subprocess.run([cluster.nodes["api"].bin, "status", "--nodes", "--endpoint", cluster.nodes["api"].endpoint],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for name in ("api", "n1", "n2"):
        assert any(line.split()[:1] == [name] for line in out.stdout.splitlines()), out.stdout
    # A node without the api role turns AWS calls away, saying where to go.
    resp = support.raw_request(cluster.nodes["n1"].endpoint, "GET", "/servicenetworks")
    assert resp.status == 404 and "api role" in resp.json()["message"], resp.json()
    # A second live node of an existing name is refused.
    twin = TrellisServer(cluster.nodes["n1"].workdir / "twin", config_text=CONFIG,
                         env={"TRELLIS_STORE": cluster.etcd.url([0, 1, 2]), "TRELLIS_ROLE": "proxy",
                              "TRELLIS_NODE": "n1"})
    twin.spawn()
    try:
        assert twin.proc.wait(20) != 0
        assert "already named" in twin.log_tail()
    finally:
        twin.kill()


def test_writes_through_the_api_node_are_served_by_every_proxy_node_and_a_dead_node_is_left_behind(cluster):
    cluster.setup(desired=2)
    wait_for(lambda: len(cluster.healthy()) == 2, 40, interval=0.2, message="2 healthy targets")
    # One node checks the target group (both route on what it found).
    checkers = set().union(*cluster.health_records().values())
    assert len(checkers) == 1, cluster.health_records()
    # The scheduler spread the tasks over both tasks nodes.
    running = cluster.tasks()
    placed = cluster.placements()
    assert sorted(placed[t["taskArn"]] for t in running) == ["n1", "n2"], (placed, running)
    for node in ("n1", "n2"):
        status, body = wait_for(lambda: r if (r := _try(lambda: cluster.get(node))) and r[0] == 200 else None,
                                15, interval=0.1, message=f"served through {node}")
        assert json.loads(body)["task"].startswith("arn:aws:ecs:")
    a1, a2 = cluster.ingress("n1")["address"], cluster.ingress("n2")["address"]
    assert a1 != a2
    # DNS on either node answers both nodes' addresses, its own first.
    dns_port = cluster.ingress("n1")["dnsPort"]
    for own, other in ((a1, a2), (a2, a1)):
        code, _flags, answers = dns_query(own, dns_port, cluster.dns)
        assert code == 0 and [a[2] for a in answers] == [own, other], (own, code, answers)

    # A change through the API node is live on both proxy nodes (aim 250 ms p99; bound generous).
    started = time.monotonic()
    cluster.lattice.create_rule(
        serviceIdentifier=cluster.svc, listenerIdentifier=cluster.listener, name="probe", priority=1,
        match={"httpMatch": {"pathMatch": {"match": {"exact": "/probe"}}}},
        action={"fixedResponse": {"statusCode": 500}})
    live = {}
    while len(live) < 2 and time.monotonic() - started < 10:
        for node in ("n1", "n2"):
            if node not in live and cluster.get(node, "/probe")[0] == 500:
                live[node] = time.monotonic() - started
        time.sleep(0.005)
    assert len(live) == 2, live
    print(f"a rule created through the API node served by n1 after {live['n1'] * 1000:.0f} ms, "
          f"n2 after {live['n2'] * 1000:.0f} ms")
    view = cluster.nodes_view()
    assert view["n1"]["revision"] > 0 and view["n2"]["revision"] > 0, view

    # kill -9 n2 (and an etcd member) while a client keeps going, n2's address first as a client that cached the answer
    # would, then the other address DNS gave when that fails: nothing is lost. n2's record goes
    # with its lease, DNS stops naming it, its task is stopped and replaced on n1.
    victim = [t["taskArn"] for t in running if placed[t["taskArn"]] == "n2"][0]
    counts = {"ok": 0, "retried": 0, "failed": []}
    port = 80 + cluster.ingress("n1")["lowPortOffset"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get_any():
        for i, address in enumerate((a2, a1)):
            req = urllib.request.Request(f"http://{address}:{port}/", headers={"Host": cluster.dns})
            try:
                with opener.open(req, timeout=2) as r:
                    counts["retried"] += i
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
            except OSError:
                continue
        return None
    cluster.nodes["n2"].kill()
    # And the etcd member n1 talks to first: n1 goes on with the next one.
    cluster.etcd.kill(1)
    killed = time.monotonic()

    def recovered():
        status = get_any()
        if status == 200:
            counts["ok"] += 1
        else:
            counts["failed"].append(status)
        left = "n2" not in (cluster.nodes_view() or {"n2": "unknown"})
        dns = [a[2] for a in dns_query(a1, dns_port, cluster.dns)[2]] == [a1]
        stopped = cluster.ecs.describe_tasks(cluster="c1", tasks=[victim])["tasks"][0]["lastStatus"] == "STOPPED"
        now_running = cluster.tasks()
        replaced = len(now_running) == 2 and all(cluster.placements().get(t["taskArn"]) == "n1" for t in now_running)
        return left and dns and stopped and replaced and len(cluster.healthy()) == 2
    wait_for(recovered, 60, interval=0.1, message="n2 left behind and its task replaced on n1")
    print(f"n2 killed: left, its task replaced and healthy on n1 {time.monotonic() - killed:.1f} s later; "
          f"{counts['ok']} requests served meanwhile, {counts['retried']} of them on n1 after n2 refused")
    assert counts["failed"] == [] and counts["ok"] > 5 and counts["retried"] > 0, counts
    gone = cluster.ecs.describe_tasks(cluster="c1", tasks=[victim])["tasks"][0]
    # The task's process died with n2: whichever notices first stops it, the node's lease running
    # out (3 s) or the task's target failing its health checks (two 1 s checks).
    assert "n2" in gone["stoppedReason"] or gone["stoppedReason"] == "Task failed VPC Lattice health checks", gone


def test_killing_an_etcd_member_or_an_api_node_loses_no_acknowledged_write(workdir):
    if shutil.which("etcd") is None:
        pytest.skip("no etcd binary on PATH (apt-get install etcd-server)")
    etcd = EtcdCluster(workdir)
    nodes = []
    try:
        for name, order in (("a1", (0, 1, 2)), ("a2", (2, 1, 0))):
            env = {"TRELLIS_STORE": etcd.url(order), "TRELLIS_ROLE": "api", "TRELLIS_NODE": name}
            nodes.append(TrellisServer(workdir / name, env=env).start())
        clients = [make_client("vpc-lattice", n.endpoint) for n in nodes]
        vpc = make_client("ec2", nodes[0].endpoint).create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        acknowledged, failed = [], []
        for i in range(60):
            if i == 15:
                etcd.kill(0)  # the member a1 talks to first
            if i == 35:
                nodes[0].kill()  # an API node, mid-stream: the client goes to the other
            live = [c for c, n in zip(clients, nodes) if n.proc.poll() is None]
            client = live[i % len(live)]
            name = f"write-{i}"
            try:
                client.create_target_group(name=name, type="IP",
                                           config={"port": 80, "protocol": "HTTP", "vpcIdentifier": vpc})
                acknowledged.append(name)
            except Exception as e:  # noqa: BLE001 - counted, asserted below
                failed.append((name, repr(e)))
        # Read back through the surviving API node: every acknowledged write is there.
        stored = {t["name"] for t in support.list_all(clients[1], "list_target_groups")}
        lost = [n for n in acknowledged if n not in stored]
        print(f"{len(acknowledged)} writes acknowledged, {len(failed)} refused, {len(lost)} lost "
              f"(an etcd member killed after 15, an API node after 35)")
        assert lost == [], lost
        assert len(acknowledged) >= 55, failed
    finally:
        for n in nodes:
            n.kill()
        etcd.close()


def test_a_draining_target_waits_for_the_requests_of_every_proxy_node(cluster):
    """n1 has nothing in flight to the task, n2 has a slow request: the target stays (DRAINING)
    and the task serves on until n2's request is answered."""
    import threading
    cluster.setup(desired=1)
    wait_for(lambda: len(cluster.healthy()) == 1, 40, interval=0.2, message="a healthy target")
    task = cluster.tasks()[0]["taskArn"]
    status, body = wait_for(lambda: r if (r := _try(lambda: cluster.get("n2"))) and r[0] == 200 else None, 15,
                            interval=0.1, message="served through n2")
    ip = json.loads(body)["address"]

    def statuses():
        return [t["status"] for t in cluster.lattice.list_targets(targetGroupIdentifier=cluster.tg)["items"]
                if t["id"] == ip]
    answer = {}

    def slow():
        try:
            answer["got"] = cluster.get("n2", "/slow?delay_ms=4000")
        except Exception as e:  # noqa: BLE001 - the test fails on it below
            answer["error"] = repr(e)
    client = threading.Thread(target=slow, daemon=True)
    client.start()
    time.sleep(1)
    cluster.ecs.stop_task(cluster="c1", task=task, reason="drain across nodes")
    time.sleep(1.5)
    # n1 drained at once; n2 has not: the target is still there, draining.
    assert statuses() == ["DRAINING"], statuses()
    assert client.is_alive(), answer
    client.join(15)
    status, body = answer.get("got", (None, answer))
    assert status == 200 and json.loads(body)["task"] == task, answer
    wait_for(lambda: statuses() == [], 15, interval=0.2, message="the target goes once n2 has drained it too")
