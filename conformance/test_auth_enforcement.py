"""Auth policies enforced by the proxy (issue 7): a service or service network
with `authType: AWS_IAM` lets through only what its policy allows; without a policy nothing;
the 403 names the layer (spec §3.11); a policy change applies to the next request. Signed
requests (botocore's SigV4 signer, UNSIGNED-PAYLOAD) are verified against Trellis's credentials
(users' keys, STS sessions, the root key) and evaluated as their principal.
"""

from __future__ import annotations

import json

import pytest

from support import forward, wait_for
from test_dataplane import CONFIG, DataPlane


@pytest.fixture
def dp(server_factory):
    plane = DataPlane(server_factory(config_text=CONFIG))
    yield plane
    plane.close()


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(resource="*", **condition) -> dict:
    s = {"Effect": "Allow", "Principal": "*", "Action": "vpc-lattice-svcs:Invoke", "Resource": resource}
    if condition:
        s["Condition"] = condition
    return s


def test_a_guarded_service_serves_only_what_its_policy_allows(dp):
    vpc = dp.res.vpc()
    target = dp.target("app")
    tg = dp.tg(vpc)["id"]
    dp.register(tg, target)
    m = dp.mesh(forward(tg), vpc=vpc)
    svc, host = m["svc"]["id"], m["host"]
    c = dp.client(vpc)
    dp.wait_serving(c, host, "app")
    dp.lattice.update_service(serviceIdentifier=svc, authType="AWS_IAM")
    # No policy: everything is denied, and the answer says by which layer.
    r = dp.wait_serving(c, host, 403)
    assert r.body.decode().startswith("AccessDeniedException: User: anonymous is not authorized to perform: "
                                      "vpc-lattice-svcs:Invoke on resource: ")
    assert r.body.decode().endswith("because no service-based policy allows the vpc-lattice-svcs:Invoke action")
    # GET under /public from this VPC only.
    dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=policy(allow(
        "*/public*", StringEquals={"vpc-lattice-svcs:RequestMethod": "GET", "vpc-lattice-svcs:SourceVpc": vpc})))
    dp.wait_serving(c, host, "app", path="/public/page")
    assert c.request("POST", "/public/page", host).status == 403
    assert c.request("GET", "/private", host).status == 403
    # Back to NONE: open again.
    dp.lattice.update_service(serviceIdentifier=svc, authType="NONE")
    dp.wait_serving(c, host, "app", path="/private")


def test_a_guarded_network_covers_its_services_and_explicit_deny_wins(dp):
    vpc = dp.res.vpc()
    target = dp.target("app")
    tg = dp.tg(vpc)["id"]
    dp.register(tg, target)
    m = dp.mesh(forward(tg), vpc=vpc)
    sn, host = m["sn"]["id"], m["host"]
    c = dp.client(vpc)
    dp.wait_serving(c, host, "app")
    dp.lattice.put_auth_policy(resourceIdentifier=sn, policy=policy(
        allow(), {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*/admin*"}))
    dp.lattice.update_service_network(serviceNetworkIdentifier=sn, authType="AWS_IAM")
    r = dp.wait_serving(c, host, 403, path="/admin")
    assert r.body.decode().endswith("/admin with an explicit deny in a network-based policy"), r
    assert c.request("GET", "/", host).status == 200
    # A request signed with a key nobody has is refused, not evaluated as anonymous.
    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDNOBODY/20261204/us-east-1/vpc-lattice-svcs/aws4_request, "
                               "SignedHeaders=host, Signature=00"}
    r = c.request("GET", "/", host, headers=signed)
    assert r.status == 403 and b"signature was refused" in r.body, r


def test_put_auth_policy_says_what_is_wrong(dp):
    svc = dp.res.service()
    bad = policy({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
                  "Condition": {"StringSometimes": {"a": "b"}}})
    with pytest.raises(dp.lattice.exceptions.ValidationException) as e:
        dp.lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=bad)
    assert "StringSometimes" in str(e.value)


def signed_get(address: str, port: int, host: str, path: str, key: str, secret: str, token: str | None = None,
               region: str = "us-east-1", method: str = "GET", headers: dict | None = None):
    """A request (GET by default) signed by botocore's SigV4 signer (service vpc-lattice-svcs,
    UNSIGNED-PAYLOAD), sent to the VPC's ingress address with `Host: host`; (status, body)."""
    import http.client
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method=method, url=f"http://{host}{path}",
                     headers={"Host": host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", **(headers or {})})
    SigV4Auth(Credentials(key, secret, token), "vpc-lattice-svcs", region).add_auth(req)
    conn = http.client.HTTPConnection(address, port, timeout=10)
    try:
        conn.request(method, path, headers=dict(req.headers.items()))
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def root_credentials(dp) -> dict:
    """The account's root key, as `trellis credentials` gets it."""
    import urllib.request
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"{dp.endpoint}/_trellis/credentials") as r:
        return json.loads(r.read())


def served_service(dp) -> dict:
    """A VPC, one target and a service it reaches, serving (authType still NONE): the mesh, with
    its client `c` and the `address` and `port` it enters at."""
    vpc = dp.res.vpc()
    target = dp.target("app")
    tg = dp.tg(vpc)["id"]
    dp.register(tg, target)
    m = dp.mesh(forward(tg), vpc=vpc)
    m["c"] = dp.client(vpc)
    dp.wait_serving(m["c"], m["host"], "app")
    info = dp.ingress(vpc)
    m["address"], m["port"] = info["address"], dp.real_port(info, 80)
    return m


def test_signed_requests_are_verified_and_evaluated_as_their_principal(dp):
    root = root_credentials(dp)
    iam = dp.server.client("iam")
    user = iam.create_user(UserName="reader")["User"]
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    m = served_service(dp)
    svc, host, c = m["svc"]["id"], m["host"], m["c"]
    # Only the user `reader`, and only when authenticated.
    dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=policy({
        "Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "vpc-lattice-svcs:Invoke", "Resource": "*",
        "Condition": {"StringNotEquals": {"aws:PrincipalType": "Anonymous"}}}))
    dp.lattice.update_service(serviceIdentifier=svc, authType="AWS_IAM")
    port = m["port"]
    dp.wait_serving(c, host, 403, path="/x")  # the service is guarded now
    wait_for(lambda: signed_get(m["address"], port, host, "/x", key["AccessKeyId"],
                                key["SecretAccessKey"])[0] == 200, 10, interval=0.1, message="the user is let in")
    status, body = signed_get(m["address"], port, host, "/x", root["accessKeyId"], root["secretAccessKey"])
    assert status == 403 and f"User: {root['arn']} is not authorized".encode() in body, body
    assert c.request("GET", "/x", host).status == 403
    # A bad secret, another region: refused as such, not evaluated as anonymous.
    status, body = signed_get(m["address"], port, host, "/x", key["AccessKeyId"], "not-the-secret")
    assert status == 403 and b"does not match" in body, body
    status, body = signed_get(m["address"], port, host, "/x", key["AccessKeyId"], key["SecretAccessKey"],
                              region="eu-west-1")
    assert status == 403 and b"region" in body, body
    # A role's session, through STS: its principal is the session, which the role names.
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": root["account"]},
                                                                "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName="lattice-caller", AssumeRolePolicyDocument=trust)["Role"]
    sts = dp.server.client("sts")
    creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1")["Credentials"]
    dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=policy({
        "Effect": "Allow", "Principal": {"AWS": role["Arn"]}, "Action": "*", "Resource": "*"}))
    # The new policy is in force once the user is no longer let in.
    wait_for(lambda: signed_get(m["address"], port, host, "/x", key["AccessKeyId"],
                                key["SecretAccessKey"])[0] == 403, 10, interval=0.1, message="the new policy")
    wait_for(lambda: signed_get(m["address"], port, host, "/y", creds["AccessKeyId"], creds["SecretAccessKey"],
                                creds["SessionToken"])[0] == 200, 10, interval=0.1, message="the session is let in")
    status, body = signed_get(m["address"], port, host, "/y", creds["AccessKeyId"], creds["SecretAccessKey"],
                              creds["SessionToken"])
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    session_arn = f"arn:aws:sts::{root['account']}:assumed-role/lattice-caller/s1"
    assert seen["x-amzn-lattice-identity"] == f"Principal={session_arn};PrincipalOrgID=o-trellis0000;SessionName=s1"
    status, body = signed_get(m["address"], port, host, "/y", creds["AccessKeyId"], creds["SecretAccessKey"])
    assert status == 403 and b"token" in body, body


def test_curl_aws_sigv4_is_accepted(dp):
    """`curl --aws-sigv4` as the Lattice docs show it (UNSIGNED-PAYLOAD given as a header)."""
    import subprocess
    root = root_credentials(dp)
    m = served_service(dp)
    svc, host, c = m["svc"]["id"], m["host"], m["c"]
    dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=policy({
        "Effect": "Allow", "Principal": {"AWS": root["account"]}, "Action": "*", "Resource": "*"}))
    dp.lattice.update_service(serviceIdentifier=svc, authType="AWS_IAM")
    dp.wait_serving(c, host, 403)
    port = m["port"]

    def curl(*extra):
        return subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve", f"{host}:{port}:{m['address']}",
                               "--aws-sigv4", "aws:amz:us-east-1:vpc-lattice-svcs",
                               "--user", f"{root['accessKeyId']}:{root['secretAccessKey']}",
                               "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", *extra,
                               "-w", "\n%{http_code}", f"http://{host}:{port}/hello?q=1"],
                              capture_output=True, text=True, timeout=30)
    out = curl()
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", out.stdout + out.stderr
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-amzn-lattice-identity"].startswith(f"Principal={root['arn']};")
    # A POST with a body: the payload is not signed, so it streams.
    out = curl("-X", "POST", "--data-binary", "x" * 100_000)
    assert out.stdout.rsplit("\n", 1)[1] == "200", out.stdout[-300:] + out.stderr


# --------------------------------------------------------------------------------------------
# A table of policies, each asserted from real requests through the proxy
# --------------------------------------------------------------------------------------------

def _cases(vpc, user_arn, account):
    """(service policy statements, request, expected status); a request is
    (method, path, headers, signed)."""
    svc_arn = "arn:aws:vpc-lattice:us-east-1:" + account + ":service/*"
    allow_all = allow()
    c = []
    def case(statements, method="GET", path="/p", headers=None, signed=False, want=200):
        c.append((statements, (method, path, headers or {}, signed), want))
    # Principals
    case([allow_all])
    case([allow_all], signed=True)
    case([{**allow_all, "Principal": {"AWS": "*"}}])
    case([{**allow_all, "Principal": {"AWS": account}}], want=403)
    case([{**allow_all, "Principal": {"AWS": account}}], signed=True)
    case([{**allow_all, "Principal": {"AWS": f"arn:aws:iam::{account}:root"}}], signed=True)
    case([{**allow_all, "Principal": {"AWS": user_arn}}], signed=True)
    case([{**allow_all, "Principal": {"AWS": "arn:aws:iam::111122223333:root"}}], signed=True, want=403)
    case([{**allow_all, "Principal": {"AWS": [f"arn:aws:iam::{account}:user/other", user_arn]}}], signed=True)
    # Actions
    case([{**allow_all, "Action": "vpc-lattice-svcs:*"}])
    case([{**allow_all, "Action": "vpc-lattice-svcs:Connect"}], want=403)
    case([{k: v for k, v in allow_all.items() if k != "Action"} | {"NotAction": "vpc-lattice-svcs:Connect"}])
    case([{k: v for k, v in allow_all.items() if k != "Action"} | {"NotAction": "vpc-lattice-svcs:Invoke"}], want=403)
    # Resources
    case([allow("*/p")])
    case([allow("*/p")], path="/q", want=403)
    case([allow("*/p*")], path="/p/deeper")
    case([allow("*/?")], path="/p")
    case([allow("*/??")], path="/p", want=403)
    case([allow(svc_arn + "/p")])
    case([allow("arn:aws:vpc-lattice:eu-west-1:*")], want=403)
    case([{k: v for k, v in allow_all.items() if k != "Resource"} | {"NotResource": "*/admin*"}])
    case([{k: v for k, v in allow_all.items() if k != "Resource"} | {"NotResource": "*/admin*"}], path="/admin", want=403)
    # String operators
    case([allow(StringEquals={"vpc-lattice-svcs:RequestMethod": "GET"})])
    case([allow(StringEquals={"vpc-lattice-svcs:RequestMethod": "GET"})], method="POST", want=403)
    case([allow(StringNotEquals={"vpc-lattice-svcs:RequestMethod": "DELETE"})])
    case([allow(StringEqualsIgnoreCase={"vpc-lattice-svcs:RequestHeader/x-team": "BLUE"})], headers={"x-team": "blue"})
    case([allow(StringEquals={"vpc-lattice-svcs:RequestHeader/x-team": "BLUE"})], headers={"x-team": "blue"}, want=403)
    case([allow(StringLike={"vpc-lattice-svcs:RequestHeader/user-agent": "probe/*"})], headers={"user-agent": "probe/2"})
    case([allow(StringNotLike={"vpc-lattice-svcs:RequestPath": "/private*"})])
    case([allow(StringNotLike={"vpc-lattice-svcs:RequestPath": "/p*"})], want=403)
    case([allow(StringEquals={"vpc-lattice-svcs:SourceVpc": vpc})])
    case([allow(StringEquals={"vpc-lattice-svcs:SourceVpc": "vpc-0000000000000000"})], want=403)
    case([allow(StringEquals={"vpc-lattice-svcs:SourceVpcOwnerAccount": account})])
    case([allow(StringEquals={"vpc-lattice-svcs:RequestHeader/x-missing": "x"})], want=403)
    case([allow(StringNotEquals={"vpc-lattice-svcs:RequestHeader/x-missing": "x"})])
    case([allow(StringEqualsIfExists={"vpc-lattice-svcs:RequestHeader/x-missing": "x"})])
    case([allow(StringEqualsIfExists={"vpc-lattice-svcs:RequestHeader/x-team": "red"})], headers={"x-team": "blue"},
         want=403)
    # Principal keys
    case([allow(StringNotEquals={"aws:PrincipalType": "Anonymous"})], want=403)
    case([allow(StringNotEquals={"aws:PrincipalType": "Anonymous"})], signed=True)
    case([allow(StringEquals={"aws:PrincipalType": "User"})], signed=True)
    case([allow(StringEquals={"aws:PrincipalArn": user_arn})], signed=True)
    case([allow(StringEquals={"aws:PrincipalAccount": account})], signed=True)
    case([allow(StringEquals={"aws:PrincipalOrgID": "o-trellis0000"})], signed=True)
    case([allow(StringEquals={"aws:PrincipalOrgID": "o-trellis0000"})], want=403)
    case([allow(StringEquals={"aws:username": "table"})], signed=True)
    # ARN operators
    case([allow(ArnLike={"vpc-lattice-svcs:ServiceArn": svc_arn})])
    case([allow(ArnEquals={"vpc-lattice-svcs:ServiceArn": "arn:aws:vpc-lattice:us-east-1:1:service/svc-x"})], want=403)
    case([allow(ArnLike={"vpc-lattice-svcs:ServiceNetworkArn": "arn:aws:vpc-lattice:*:*:servicenetwork/*"})])
    case([allow(ArnNotLike={"vpc-lattice-svcs:ServiceNetworkArn": "arn:aws:vpc-lattice:*:*:servicenetwork/*"})],
         want=403)
    # Numeric, Null, IpAddress
    case([allow(NumericEquals={"vpc-lattice-svcs:Port": "80"})])
    case([allow(NumericGreaterThan={"vpc-lattice-svcs:Port": "1024"})], want=403)
    case([allow(NumericLessThanEquals={"vpc-lattice-svcs:Port": "80"})])
    case([allow(Null={"vpc-lattice-svcs:RequestHeader/x-team": "true"})])
    case([allow(Null={"vpc-lattice-svcs:RequestHeader/x-team": "true"})], headers={"x-team": "a"}, want=403)
    case([allow(IpAddress={"aws:SourceIp": "127.0.0.0/8"})])
    case([allow(NotIpAddress={"aws:SourceIp": "127.0.0.0/8"})], want=403)
    # Query strings and set qualifiers
    case([allow(**{"ForAnyValue:StringEquals": {"vpc-lattice-svcs:RequestQueryString/tag": ["b"]}})],
         path="/p?tag=a&tag=b")
    case([allow(**{"ForAllValues:StringEquals": {"vpc-lattice-svcs:RequestQueryString/tag": ["a"]}})],
         path="/p?tag=a&tag=b", want=403)
    case([allow(**{"ForAllValues:StringEquals": {"vpc-lattice-svcs:RequestQueryString/tag": ["a", "b"]}})],
         path="/p?tag=a&tag=b")
    case([allow(StringEquals={"vpc-lattice-svcs:RequestQueryString/q": "hello world"})], path="/p?q=hello%20world")
    # Explicit deny and several statements
    case([allow_all, {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*/p"}], want=403)
    case([allow_all, {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*/p"}], path="/q")
    case([allow("*/a"), allow("*/p")])
    case([{"Effect": "Deny", "Principal": {"AWS": user_arn}, "Action": "*", "Resource": "*"}, allow_all], signed=True,
         want=403)
    case([{"Effect": "Deny", "Principal": {"AWS": user_arn}, "Action": "*", "Resource": "*"}, allow_all])
    return c


def test_a_table_of_policies_through_the_proxy(dp):
    iam = dp.server.client("iam")
    user = iam.create_user(UserName="table")["User"]
    key = iam.create_access_key(UserName="table")["AccessKey"]
    account = user["Arn"].split(":")[4]
    m = served_service(dp)
    vpc, svc, sn, host, c = m["vpc"], m["svc"]["id"], m["sn"]["id"], m["host"], m["c"]
    dp.lattice.update_service(serviceIdentifier=svc, authType="AWS_IAM")
    dp.wait_serving(c, host, 403)

    def send(method, path, headers, signed):
        if signed:
            return signed_get(m["address"], m["port"], host, path, key["AccessKeyId"], key["SecretAccessKey"],
                              method=method, headers=headers)
        r = c.request(method, path, host, headers=headers)
        return r.status, r.body

    cases = _cases(vpc, user["Arn"], account)
    assert len(cases) >= 60, len(cases)
    failures = []
    for i, (statements, (method, path, headers, signed), want) in enumerate(cases):
        # Each version lets in `/sentinel` with its own case number only: once that passes, this
        # version is in force (the one before turns it away).
        mark = {"x-case": str(i)}
        doc = policy(*statements, allow("*/sentinel", StringEquals={"vpc-lattice-svcs:RequestHeader/x-case": str(i)}),
                     {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*/sentinel",
                      "Condition": {"StringNotEquals": {"vpc-lattice-svcs:RequestHeader/x-case": str(i)}}})
        dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=doc)
        wait_for(lambda: send("GET", "/sentinel", mark, False)[0] == 200, 5, interval=0.02,
                 message=f"case {i}'s policy to apply")
        status, body = send(method, path, headers, signed)
        if status != want:
            failures.append(f"case {i}: {statements} {method} {path} {headers} signed={signed}: "
                            f"{status} (want {want}) {body[:200]!r}")
    assert not failures, "\n".join(failures)

    # The network layer in front: a deny there wins over the service's allow, and its 403 says so.
    dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=policy(allow()))
    dp.lattice.put_auth_policy(resourceIdentifier=sn, policy=policy(
        allow(), {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*/net-denied"}))
    dp.lattice.update_service_network(serviceNetworkIdentifier=sn, authType="AWS_IAM")
    r = dp.wait_serving(c, host, 403, path="/net-denied")
    assert b"network-based" in r.body
    assert send("GET", "/open", {}, False)[0] == 200
    dp.lattice.put_auth_policy(resourceIdentifier=svc, policy=policy(allow("*/svc-only")))
    dp.wait_serving(c, host, 403, path="/open")
    assert b"service-based" in send("GET", "/open", {}, False)[1]
