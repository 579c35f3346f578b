"""netns mode (issue 4): VPCs as real networks, reached only through Lattice.

The seed scenario by hand, with the real `aws` clients (boto3) and the `trellis` CLI: VPC-A and
VPC-B with overlapping blocks and VPC-C; a target server in VPC-A started with `trellis vpc
exec`; a service network associated with A and B; a service forwarding to the target. From an
instance in VPC-B the service's name resolves and answers (over HTTPS too, verified with the
Trellis CA that `vpc exec` commands trust), and the target sees `x-amzn-lattice-network` naming
VPC-B; the target's own address answers inside VPC-A but not
from B nor from VPC-C (a distinct block); nothing on the host answers from a VPC; from VPC-C the
name does not resolve and the link-local address does not answer; removing B's association stops
access within a second (checked with a generous bound). On start the server reconciles (a stray
namespace of its installation removed, a missing VPC's made again); deleting a subnet removes its
bridge; as root without --network the server runs in netns mode. After every test, once
`trellis net cleanup` has run, no namespace, link or address of the installation remains
(checked with `ip`).

Needs root (network namespaces); skipped otherwise. CI runs as root. Every server, instance and
namespace is removed by PID or by name prefix even when a test fails (after the check above).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import support
from support import REGION, TrellisServer, leftovers, links, make_client, namespaces, remove_leftovers, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None,
    reason="netns mode needs root, iproute2 and curl")

# A target server for instances: answers every GET with what it received, as JSON.
ECHO_SERVER = r'''
import http.server, json, os, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                           "me": os.environ.get("TRELLIS_INSTANCE_ADDRESS")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Echo)
print(os.environ["TRELLIS_INSTANCE_ADDRESS"], flush=True)
server.serve_forever()
'''


@contextlib.contextmanager
def installation(workdir: Path, network: str | None = "netns"):
    """A server (netns mode unless `network` says otherwise) with a name prefix of its own.

    Afterwards the server is stopped and `trellis net cleanup` run, and then nothing of the
    installation may remain (checked with `ip`): leftovers fail the test, and only after that
    check are they removed, so that none is ever left behind."""
    prefix = f"tc{os.getpid() % 10000:04d}{int(time.time()) % 1000:03d}"
    server = TrellisServer(workdir / f"netns-{prefix}", network=network, env={"TRELLIS_NAME_PREFIX": prefix},
                           config_text="relaxed_health_checks = true\n")
    server.prefix = prefix
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.close()
            # Instances go with their command: with every `vpc exec` ended, only VPCs' remain.
            instances_left = [n for n in namespaces(prefix) if "-i-" in n]
            r = subprocess.run([server.bin, "net", "cleanup", "--data-dir", str(server.data_dir)],
                               env={**os.environ, "TRELLIS_NAME_PREFIX": prefix}, capture_output=True, text=True)
            left = leftovers(prefix)
            remove_leftovers(prefix)
    assert instances_left == [], f"instances outlived their commands: {instances_left}"
    assert r.returncode == 0, r.stderr
    assert left == [], f"left behind after trellis net cleanup: {left}"


@pytest.fixture
def netns_server(workdir):
    with installation(workdir) as server:
        yield server


class Instances:
    """`trellis vpc exec` processes started by a test; terminated (by PID) at the end."""

    def __init__(self, server: TrellisServer, workdir: Path):
        self.server = server
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def run(self, vpc: str, *cmd: str, timeout: float = 20, subnet: str | None = None):
        args = [self.server.bin, "vpc", "exec", vpc, "--endpoint", self.server.endpoint]
        if subnet:
            args += ["--subnet", subnet]
        return subprocess.run(args + ["--", *cmd], capture_output=True, text=True, timeout=timeout)

    def serve(self, vpc: str, port: int) -> tuple[subprocess.Popen, str]:
        script = self.workdir / "echo_server.py"
        script.write_text(ECHO_SERVER)
        proc = subprocess.Popen([self.server.bin, "vpc", "exec", vpc, "--endpoint", self.server.endpoint, "--",
                                 sys.executable, str(script), str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        address = proc.stdout.readline().strip()
        assert address, proc.stderr.read() if proc.poll() is not None else "no address printed"
        return proc, address

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def instances(netns_server, tmp_path):
    inst = Instances(netns_server, tmp_path)
    try:
        yield inst
    finally:
        inst.stop_all()


def curl(instances, vpc, url, *extra, timeout=3):
    r = instances.run(vpc, "curl", "-s", "-m", str(timeout), *extra, url)
    return r.returncode, r.stdout


def host_addresses() -> list[str]:
    """The host's IPv4 addresses outside 127.0.0.0/8 (inside a VPC, 127.x is the instance's own)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    addresses = [line.split()[3].split("/")[0] for line in out.splitlines()]
    return [a for a in addresses if not a.startswith("127.")]


@contextlib.contextmanager
def host_server(directory: Path):
    """An HTTP server on the host, on every address (0.0.0.0), serving an empty directory; its port."""
    port = support.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0"], cwd=directory,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: host_curl("127.0.0.1", port) == 0, 10, interval=0.1, message="the host server answers")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def host_curl(address: str, port: int) -> int:
    """curl's exit status for http://address:port/ from the host."""
    return subprocess.run(["curl", "-s", "-m", "2", "-o", "/dev/null", f"http://{address}:{port}/"],
                          capture_output=True).returncode


def test_seed_scenario(netns_server, instances, tmp_path):
    srv = netns_server
    ec2 = make_client("ec2", srv.endpoint)
    lattice = make_client("vpc-lattice", srv.endpoint)

    def vpc(cidr, subnet):
        vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=subnet)
        return vpc_id

    vpc_a = vpc("10.0.0.0/16", "10.0.1.0/24")
    vpc_b = vpc("10.0.0.0/16", "10.0.1.0/24")  # overlaps A on purpose
    vpc_c = vpc("10.2.0.0/16", "10.2.1.0/24")
    wait_for(lambda: len(namespaces(srv.prefix)) == 3, 10, message="a namespace per VPC")

    # The target, in VPC-A.
    target, target_ip = instances.serve(vpc_a, 8080)
    assert target_ip.startswith("10.0.1.")

    sn = lattice.create_service_network(name=support.uname("netns"))["id"]
    assoc_a = lattice.create_service_network_vpc_association(serviceNetworkIdentifier=sn, vpcIdentifier=vpc_a)
    assoc_b = lattice.create_service_network_vpc_association(serviceNetworkIdentifier=sn, vpcIdentifier=vpc_b)
    svc = lattice.create_service(name=support.uname("web"))
    dns = svc["dnsEntry"]["domainName"]
    tg = lattice.create_target_group(name=support.uname("tg"), type="IP",
                                     config={"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc_a})["id"]
    # Targets must be inside the VPC's block in this mode (loopback addresses too).
    reg = lattice.register_targets(targetGroupIdentifier=tg, targets=[
        {"id": target_ip, "port": 8080}, {"id": "127.0.0.1", "port": 8080}, {"id": "10.9.9.9"}])
    assert [t["id"] for t in reg["successful"]] == [target_ip]
    assert sorted(t["id"] for t in reg["unsuccessful"]) == ["10.9.9.9", "127.0.0.1"]
    assert {t["failureCode"] for t in reg["unsuccessful"]} == {"UnsupportedTarget"}
    lattice.create_listener(serviceIdentifier=svc["id"], name="http", protocol="HTTP", port=80,
                            defaultAction={"forward": {"targetGroups": [{"targetGroupIdentifier": tg}]}})
    lattice.create_service_network_service_association(serviceNetworkIdentifier=sn, serviceIdentifier=svc["id"])

    # From VPC-B, by name: the target answers and sees VPC-B as the source.
    def reached():
        code, out = curl(instances, vpc_b, f"http://{dns}/hello")
        return json.loads(out) if code == 0 and out.startswith("{") else None
    seen = wait_for(reached, 15, interval=0.2, message="VPC-B reaches the service")
    assert seen["path"] == "/hello"
    assert seen["me"] == target_ip
    assert seen["headers"]["x-amzn-lattice-network"] == \
        f"SourceVpcArn=arn:aws:ec2:{REGION}:{support.ACCOUNT}:vpc/{vpc_b}"
    assert seen["headers"]["host"] == dns

    # HTTPS on 443 with the managed certificate: `vpc exec` commands trust the Trellis CA, so a
    # plain `curl https://<name>/` verifies it.
    lattice.create_listener(serviceIdentifier=svc["id"], name="https", protocol="HTTPS", port=443,
                            defaultAction={"forward": {"targetGroups": [{"targetGroupIdentifier": tg}]}})

    def reached_tls():
        code, out = curl(instances, vpc_b, f"https://{dns}/tls")
        return json.loads(out) if code == 0 and out.startswith("{") else None
    seen = wait_for(reached_tls, 15, interval=0.2, message="VPC-B reaches the service over HTTPS")
    assert seen["path"] == "/tls"
    assert seen["headers"]["x-forwarded-proto"] == "https"

    # Health checks reach the target inside VPC-A too.
    def status():
        items = lattice.list_targets(targetGroupIdentifier=tg)["items"]
        return [t["status"] for t in items]
    wait_for(lambda: status() == ["HEALTHY"], 15, interval=0.2, message="the target is HEALTHY")

    # The name resolves to the link-local address inside B.
    r = instances.run(vpc_b, "getent", "hosts", dns)
    assert r.returncode == 0 and r.stdout.split()[0] == "169.254.171.1", r

    # The target's own address answers inside VPC-A (so that a failure below is isolation, not a
    # dead target), and not from VPC-B (its block overlaps A's but is its own network) nor from
    # VPC-C (its block is distinct, and nothing routes between VPCs).
    code, out = curl(instances, vpc_a, f"http://{target_ip}:8080/direct")
    assert code == 0 and json.loads(out)["path"] == "/direct", (code, out)
    for other in (vpc_b, vpc_c):
        code, out = curl(instances, other, f"http://{target_ip}:8080/direct", timeout=2)
        assert code != 0 and out == "", (other, code, out)

    # Nothing on the host answers from a VPC: a server on every host address is reachable from
    # the host at each of them, and from VPC-B at none of them, nor at any address of B's own
    # router (its subnet's gateway, its DNS address, Lattice's link-local address).
    with host_server(tmp_path) as port:
        addresses = host_addresses()
        assert {a: host_curl(a, port) for a in addresses} == {a: 0 for a in addresses}
        addresses += ["10.0.1.1", "10.0.0.2", "169.254.171.1"]
        script = "for a in " + " ".join(addresses) + \
            f"; do curl -s -m 2 -o /dev/null http://$a:{port}/; echo \"$a $?\"; done"
        r = instances.run(vpc_b, "sh", "-c", script, timeout=10 + 3 * len(addresses))
        assert r.returncode == 0, r.stderr
        codes = dict(line.split() for line in r.stdout.splitlines())
        assert sorted(codes) == sorted(addresses), r.stdout
        assert all(code != "0" for code in codes.values()), codes

    # VPC-C: the name does not resolve and the link-local address does not answer.
    r = instances.run(vpc_c, "getent", "hosts", dns)
    assert r.returncode != 0 and r.stdout == ""
    code, out = curl(instances, vpc_c, "http://169.254.171.1/", "-H", f"Host: {dns}", timeout=2)
    assert code != 0 and out == ""

    # Exit status and output are the command's.
    r = instances.run(vpc_c, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")

    # Removing B's association stops access from B promptly.
    lattice.delete_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=assoc_b["id"])
    removed = time.monotonic()
    # curl's own failures only (6: the name does not resolve, 7: refused, 28: timed out), not
    # the instance's.
    code = wait_for(lambda: curl(instances, vpc_b, f"http://{dns}/", timeout=1)[0] or None, 10, interval=0.1,
                    message="access from VPC-B stops")
    assert code in (6, 7, 28), code
    # Generous: the behaviour is "within a second"; each probe here starts a namespace too.
    elapsed = time.monotonic() - removed
    print(f"access from VPC-B stopped {elapsed:.2f}s after its association was deleted")
    assert elapsed < 5
    # A still reaches it (the service network stays associated with A).
    code, out = curl(instances, vpc_a, f"http://{dns}/from-a")
    assert code == 0 and json.loads(out)["path"] == "/from-a"
    del assoc_a


def test_instances_are_removed_with_their_command(netns_server, instances):
    srv = netns_server
    ec2 = make_client("ec2", srv.endpoint)
    vpc_id = ec2.create_vpc(CidrBlock="10.5.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.5.7.0/24")["Subnet"]["SubnetId"]
    r = instances.run(vpc_id, "sh", "-c", "ip -4 -o addr show dev eth0; cat /etc/resolv.conf", subnet=subnet)
    assert r.returncode == 0, r.stderr
    # An address of the subnet, AWS's reserved ones (the first four and the last) excepted.
    assert re.search(r" 10\.5\.7\.([4-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-4])/24 ", r.stdout), r.stdout
    assert "nameserver 10.5.0.2" in r.stdout
    assert [n for n in namespaces(srv.prefix) if "-i-" in n] == []
    listed = json.loads(support.raw_request(srv.endpoint, "GET", "/_trellis/instances").body)
    assert listed["instances"] == []

    # A VPC without a subnet, or an unknown subnet, is refused with a message.
    bare = ec2.create_vpc(CidrBlock="10.6.0.0/16")["Vpc"]["VpcId"]
    r = instances.run(bare, "true")
    assert r.returncode != 0 and "no subnet" in r.stderr
    r = instances.run(vpc_id, "true", subnet="subnet-0123456789abcdef0")
    assert r.returncode != 0 and "does not exist" in r.stderr

    # An instance whose owner is killed outright is reaped, and what ran inside with it.
    proc = subprocess.Popen([srv.bin, "vpc", "exec", vpc_id, "--endpoint", srv.endpoint, "--", "sleep", "60"])
    wait_for(lambda: any("-i-" in n for n in namespaces(srv.prefix)), 10, message="instance started")
    # Meanwhile its subnet has a dependency, as a subnet with a network interface in AWS.
    with pytest.raises(Exception) as refused:
        ec2.delete_subnet(SubnetId=subnet)
    assert support.error_code(refused.value) == "DependencyViolation"
    sleeper = wait_for(lambda: subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
                       .stdout.split(), 5, message="the command runs")
    # The files of trusted certificates it made for the command (it removes them itself when
    # it ends; killed outright, the server does when it reaps the instance).
    bundles = lambda: list(Path(tempfile.gettempdir()).glob(f"trellis-ca-{proc.pid}-*.pem"))  # noqa: E731
    assert bundles(), "the command's trust bundles"
    proc.kill()
    proc.wait()
    wait_for(lambda: not any("-i-" in n for n in namespaces(srv.prefix)), 15, interval=0.2,
             message="the dead owner's instance is removed")
    wait_for(lambda: not bundles(), 10, interval=0.2, message="the dead owner's trust bundles are removed")
    wait_for(lambda: not Path(f"/proc/{sleeper[0]}").exists(), 10, message="its command is ended")

    # Deleting the subnet and the VPC removes their networks.
    ec2.delete_subnet(SubnetId=subnet)
    ec2.delete_vpc(VpcId=vpc_id)
    wait_for(lambda: srv.prefix + "-" + vpc_id not in namespaces(srv.prefix), 10, message="VPC network removed")


def test_cleanup_removes_only_this_installation(netns_server, workdir):
    srv = netns_server
    ec2 = make_client("ec2", srv.endpoint)
    ec2.create_vpc(CidrBlock="10.7.0.0/16")
    wait_for(lambda: namespaces(srv.prefix), 10, message="VPC network made")
    other = srv.prefix[:-1] + ("x" if srv.prefix[-1] != "x" else "y")
    subprocess.run(["ip", "netns", "add", f"{other}-vpc-0"], check=True)
    try:
        srv.stop()
        r = subprocess.run([srv.bin, "net", "cleanup", "--data-dir", str(srv.data_dir)], capture_output=True,
                           text=True, env={**os.environ, "TRELLIS_NAME_PREFIX": srv.prefix})
        assert r.returncode == 0, r.stderr
        assert namespaces(srv.prefix) == []
        assert namespaces(other) == [f"{other}-vpc-0"]
        # Restarted, the server makes its VPC networks again.
        srv.start()
        wait_for(lambda: len(namespaces(srv.prefix)) == 1, 10, message="VPC network made again")
    finally:
        subprocess.run(["ip", "netns", "del", f"{other}-vpc-0"], capture_output=True)


def test_netns_without_root_is_one_clear_error(workdir):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", support.require_binary(),
                        "serve", "--network", "netns", "--listen", "127.0.0.1:0", "--data-dir",
                        str(workdir / "unprivileged")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "netns mode needs root" in r.stderr and "--network loopback" in r.stderr


def test_reconcile_on_start(netns_server):
    """Started, the server removes a namespace of its installation that nothing in the store
    accounts for, and makes again a VPC's that has gone."""
    srv = netns_server
    ec2 = make_client("ec2", srv.endpoint)
    kept = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    lost = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.create_subnet(VpcId=lost, CidrBlock="10.9.1.0/24")
    wait_for(lambda: len(namespaces(srv.prefix)) == 2, 10, message="a namespace per VPC")
    wait_for(lambda: gateway_device(srv.prefix + "-" + lost, "10.9.1.1"), 10, message="the subnet's bridge")
    srv.stop()
    stray = f"{srv.prefix}-vpc-0123456789abcdef0"
    subprocess.run(["ip", "netns", "add", stray], check=True)
    subprocess.run(["ip", "netns", "del", f"{srv.prefix}-{lost}"], check=True)
    assert sorted(namespaces(srv.prefix)) == sorted([stray, f"{srv.prefix}-{kept}"])
    srv.start()
    wait_for(lambda: sorted(namespaces(srv.prefix)) == sorted(f"{srv.prefix}-{v}" for v in (kept, lost)), 10,
             interval=0.1, message="the stray removed and the missing VPC made again")
    # Made again whole: the subnet's bridge holds its gateway address.
    wait_for(lambda: gateway_device(srv.prefix + "-" + lost, "10.9.1.1"), 10, message="the subnet's bridge again")


def test_deleting_a_subnet_removes_its_bridge(netns_server):
    srv = netns_server
    ec2 = make_client("ec2", srv.endpoint)
    vpc_id = ec2.create_vpc(CidrBlock="10.10.0.0/16")["Vpc"]["VpcId"]
    gone = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.10.1.0/24")["Subnet"]["SubnetId"]
    ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.10.2.0/24")
    ns = f"{srv.prefix}-{vpc_id}"
    # A subnet's bridge is the device holding its gateway address (the block's base + 1).
    bridge = wait_for(lambda: gateway_device(ns, "10.10.1.1"), 10, message="the first subnet's bridge")
    other = wait_for(lambda: gateway_device(ns, "10.10.2.1"), 10, message="the second subnet's bridge")
    ec2.delete_subnet(SubnetId=gone)
    wait_for(lambda: bridge not in links(ns), 10, interval=0.1, message="the deleted subnet's bridge removed")
    assert gateway_device(ns, "10.10.1.1") is None
    assert other in links(ns) and gateway_device(ns, "10.10.2.1") == other


def test_root_without_network_flag_runs_in_netns_mode(workdir):
    """As root, `trellis serve` without --network makes every VPC a namespace."""
    with installation(workdir, network=None) as srv:
        ec2 = make_client("ec2", srv.endpoint)
        lattice = make_client("vpc-lattice", srv.endpoint)
        vpc_id = ec2.create_vpc(CidrBlock="10.11.0.0/16")["Vpc"]["VpcId"]
        wait_for(lambda: namespaces(srv.prefix) == [f"{srv.prefix}-{vpc_id}"], 10, message="the VPC's namespace")
        sn = lattice.create_service_network(name=support.uname("default"))["id"]
        lattice.create_service_network_vpc_association(serviceNetworkIdentifier=sn, vpcIdentifier=vpc_id)

        def ingress():
            r = support.raw_request(srv.endpoint, "GET", f"/_trellis/vpcs/{vpc_id}/ingress")
            return r.json() if r.status == 200 else None
        assert wait_for(ingress, 10, message="the VPC's ingress")["network"] == "netns"


def gateway_device(ns: str, gateway: str) -> str | None:
    """The device of namespace `ns` holding address `gateway`, if any."""
    out = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr"], capture_output=True, text=True).stdout
    return next((line.split()[1] for line in out.splitlines() if f" {gateway}/" in line), None)
