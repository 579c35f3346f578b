"""Auth policies enforced by the proxy (issue 7, anonymous callers): a service or service network
with `authType: AWS_IAM` lets through only what its policy allows; without a policy nothing;
the 403 names the layer (spec §3.11); a policy change applies to the next request. Signed
requests are refused until signatures are verified.
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
    # A signed request is refused, not evaluated as anonymous.
    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/vpc-lattice-svcs/aws4_request, "
                               "SignedHeaders=host, Signature=00"}
    r = c.request("GET", "/", host, headers=signed)
    assert r.status == 403 and b"cannot be verified" in r.body, r


def test_put_auth_policy_says_what_is_wrong(dp):
    svc = dp.res.service()
    bad = policy({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
                  "Condition": {"StringSometimes": {"a": "b"}}})
    with pytest.raises(dp.lattice.exceptions.ValidationException) as e:
        dp.lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=bad)
    assert "StringSometimes" in str(e.value)
