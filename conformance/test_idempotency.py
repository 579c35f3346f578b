"""clientToken idempotency of every Create* operation.

Same token + same parameters -> the original resource (same id), nothing new is created.
Same token + different parameters -> ConflictException (409).
"""

import uuid

import pytest

from support import REGION, ACCOUNT, fixed, list_all, path_match, raises, uname


def token():
    return str(uuid.uuid4())


def _case(kind, res, lattice):
    """Returns (create(**extra) -> response, changed_extra, tracker_kind, ident_args)."""
    if kind == "service_network":
        name = uname("sn")
        return (lambda **x: lattice.create_service_network(**{"name": name, **x}), {"authType": "AWS_IAM"},
                "sn", ())
    if kind == "service":
        name = uname("svc")
        return lambda **x: lattice.create_service(**{"name": name, **x}), {"authType": "AWS_IAM"}, "service", ()
    if kind == "target_group":
        name, vpc = uname("tg"), res.vpc()
        cfg = {"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc}
        return (lambda **x: lattice.create_target_group(**{"name": name, "type": "IP", "config": cfg, **x}),
                {"config": dict(cfg, port=9090)}, "tg", ())
    if kind == "listener":
        svc = res.service()
        name = uname("l")
        return (lambda **x: lattice.create_listener(**{"serviceIdentifier": svc["id"], "name": name,
                                                       "protocol": "HTTP", "defaultAction": fixed(404), **x}),
                {"defaultAction": fixed(500)}, "listener", (svc["id"],))
    if kind == "rule":
        svc = res.service()
        lst = res.listener(svc["id"])
        name = uname("r")
        return (lambda **x: lattice.create_rule(**{"serviceIdentifier": svc["id"], "listenerIdentifier": lst["id"],
                                                   "name": name, "priority": 5, "match": path_match("/a"),
                                                   "action": fixed(404), **x}),
                {"priority": 6}, "rule", (svc["id"], lst["id"]))
    if kind == "snva":
        sn, vpc = res.sn(), res.vpc()
        sg = res.sg(vpc)
        return (lambda **x: lattice.create_service_network_vpc_association(
                    **{"serviceNetworkIdentifier": sn["id"], "vpcIdentifier": vpc, **x}),
                {"securityGroupIds": [sg]}, "snva", ())
    if kind == "snsa":
        sn, svc = res.sn(), res.service()
        return (lambda **x: lattice.create_service_network_service_association(
                    **{"serviceNetworkIdentifier": sn["id"], "serviceIdentifier": svc["id"], **x}),
                {"tags": {"different": "yes"}}, "snsa", ())
    if kind == "als":
        sn = res.sn()
        dest = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{uname('lg')}"
        return (lambda **x: lattice.create_access_log_subscription(
                    **{"resourceIdentifier": sn["id"], "destinationArn": dest, **x}),
                {"destinationArn": dest + "-other"}, "als", ())
    raise AssertionError(kind)


KINDS = ["service_network", "service", "target_group", "listener", "rule", "snva", "snsa", "als"]


@pytest.mark.parametrize("kind", KINDS)
def test_same_token_same_params_returns_same_resource(lattice, res, kind):
    create, _changed, track, pre = _case(kind, res, lattice)
    t = token()
    first = create(clientToken=t)
    res.track(track, *pre, first["id"])
    second = create(clientToken=t)
    assert second["id"] == first["id"], f"{kind}: a replayed clientToken created a second resource"
    assert second["arn"] == first["arn"]
    assert second["ResponseMetadata"]["HTTPStatusCode"] == first["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("kind", KINDS)
def test_same_token_different_params_conflicts(lattice, res, kind):
    create, changed, track, pre = _case(kind, res, lattice)
    t = token()
    first = create(clientToken=t)
    res.track(track, *pre, first["id"])
    with raises(lattice, "ConflictException"):
        create(clientToken=t, **changed)


def test_replay_does_not_duplicate_in_list(lattice, res):
    name = uname("svc")
    t = token()
    a = lattice.create_service(name=name, clientToken=t)
    res.track("service", a["id"])
    lattice.create_service(name=name, clientToken=t)
    matches = [i for i in list_all(lattice, "list_services") if i.get("name") == name]
    assert [m["id"] for m in matches] == [a["id"]]


def test_different_tokens_same_name_is_a_name_conflict(lattice, res):
    a = res.service(clientToken=token())
    with raises(lattice, "ConflictException", resourceType="SERVICE"):
        lattice.create_service(name=a["name"], clientToken=token())


def test_tokens_are_scoped_per_operation(lattice, res):
    t = token()
    a = res.sn(clientToken=t)
    b = res.service(clientToken=t)
    assert a["id"].startswith("sn-") and b["id"].startswith("svc-")
