"""PutAuthPolicy, GetAuthPolicy, DeleteAuthPolicy."""

import json

import pytest

from support import SETTLE_SECONDS, assert_no_none, assert_timestamp, becomes_gone, raises, strip_meta, wait_for


def policy_for(resource_arn):
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": "*",
            "Action": "vpc-lattice-svcs:Invoke",
            "Resource": f"{resource_arn}/*",
        }],
    }, separators=(",", ":"))


def test_put_on_service_with_auth_none_is_inactive(lattice, svc):
    p = policy_for(svc["arn"])
    r = lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=p)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert json.loads(r["policy"]) == json.loads(p)
    assert r["state"] == "Inactive", "a policy on a resource with authType NONE is Inactive"
    assert_no_none(strip_meta(r))


def test_get_returns_policy_state_and_timestamps(lattice, svc):
    p = policy_for(svc["arn"])
    lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=p)
    g = lattice.get_auth_policy(resourceIdentifier=svc["id"])
    assert json.loads(g["policy"]) == json.loads(p)
    assert g["state"] == "Inactive"
    assert_timestamp(g["createdAt"], "createdAt")
    assert_timestamp(g["lastUpdatedAt"], "lastUpdatedAt")
    assert_no_none(strip_meta(g))


def test_state_follows_auth_type(lattice, svc):
    lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=policy_for(svc["arn"]))
    lattice.update_service(serviceIdentifier=svc["id"], authType="AWS_IAM")
    assert lattice.get_auth_policy(resourceIdentifier=svc["id"])["state"] == "Active"
    lattice.update_service(serviceIdentifier=svc["id"], authType="NONE")
    assert lattice.get_auth_policy(resourceIdentifier=svc["id"])["state"] == "Inactive"


def test_put_on_iam_service_network_is_active(lattice, res):
    sn = res.sn(authType="AWS_IAM")
    r = lattice.put_auth_policy(resourceIdentifier=sn["arn"], policy=policy_for(sn["arn"]))
    assert r["state"] == "Active"
    g = lattice.get_auth_policy(resourceIdentifier=sn["id"])
    assert g["state"] == "Active"


def test_put_replaces_policy(lattice, svc):
    lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=policy_for(svc["arn"]))
    p2 = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*",
                                                             "Action": "vpc-lattice-svcs:Invoke", "Resource": "*"}]})
    lattice.put_auth_policy(resourceIdentifier=svc["arn"], policy=p2)
    g = lattice.get_auth_policy(resourceIdentifier=svc["arn"])
    assert json.loads(g["policy"]) == json.loads(p2)
    assert g["lastUpdatedAt"] >= g["createdAt"]


def test_delete_then_get_has_no_policy(lattice, svc):
    lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=policy_for(svc["arn"]))
    d = lattice.delete_auth_policy(resourceIdentifier=svc["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    # AWS answers GetAuthPolicy for a resource without a policy with 200 and no `policy` member
    # (not ResourceNotFoundException).
    wait_for(lambda: "policy" not in lattice.get_auth_policy(resourceIdentifier=svc["id"]), SETTLE_SECONDS,
             message="GetAuthPolicy to stop returning the deleted policy")


def test_get_without_policy_is_empty(lattice, svc):
    g = lattice.get_auth_policy(resourceIdentifier=svc["id"])
    assert g["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "policy" not in g, f"a resource without an auth policy has no `policy` member: {strip_meta(g)}"
    assert_no_none(strip_meta(g))


def test_delete_without_policy_succeeds(lattice, svc):
    d = lattice.delete_auth_policy(resourceIdentifier=svc["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204


@pytest.mark.parametrize("bad", ["not json", "[1,2,3]", '{"Version":"2012-10-17"'])
def test_malformed_policy_rejected(lattice, svc, bad):
    with raises(lattice, "ValidationException"):
        lattice.put_auth_policy(resourceIdentifier=svc["id"], policy=bad)


def test_put_on_unknown_service(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE", resourceId="svc-0123456789abcdef0"):
        lattice.put_auth_policy(resourceIdentifier="svc-0123456789abcdef0", policy=policy_for("arn"))


def test_put_on_unknown_service_network(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK"):
        lattice.put_auth_policy(resourceIdentifier="sn-0123456789abcdef0", policy=policy_for("arn"))


def test_deleting_service_removes_policy(lattice, res):
    s = res.service()
    lattice.put_auth_policy(resourceIdentifier=s["id"], policy=policy_for(s["arn"]))
    lattice.delete_service(serviceIdentifier=s["id"])
    becomes_gone(lattice, lambda: lattice.get_service(serviceIdentifier=s["id"]), "deleted service")
    with raises(lattice, "ResourceNotFoundException"):
        lattice.get_auth_policy(resourceIdentifier=s["id"])
