"""CreateListener, GetListener, ListListeners, UpdateListener, DeleteListener."""

import pytest

from support import (
    assert_id, assert_no_none, becomes_gone, assert_timestamp, find_item, fixed, forward, has_field, list_all, raises,
    strip_meta, uname,
)


def test_create_http_listener_defaults(lattice, res, svc, tg):
    name = uname("l")
    r = res.listener(svc["id"], name=name, protocol="HTTP", defaultAction=forward(tg["id"]))
    assert_id(r["id"], "listener", "listener")
    assert r["arn"] == f"{svc['arn']}/listener/{r['id']}"
    assert r["name"] == name
    assert r["protocol"] == "HTTP"
    assert r["port"] == 80, "an HTTP listener without a port listens on 80"
    assert r["serviceArn"] == svc["arn"]
    assert r["serviceId"] == svc["id"]
    tgs = r["defaultAction"]["forward"]["targetGroups"]
    assert tgs == [{"targetGroupIdentifier": tg["id"], "weight": 100}], (
        f"a single target group without a weight is echoed with weight 100, got {tgs}")
    assert_no_none(strip_meta(r))


def test_https_listener_defaults_to_443(res, svc):
    r = res.listener(svc["id"], protocol="HTTPS", defaultAction=fixed(404))
    assert r["port"] == 443, "an HTTPS listener without a port listens on 443"
    assert r["protocol"] == "HTTPS"


def test_get_listener(lattice, res, svc, tg):
    r = res.listener(svc["id"], tg_id=tg["id"], port=8080)
    g = lattice.get_listener(serviceIdentifier=svc["id"], listenerIdentifier=r["id"])
    for k in ("arn", "id", "name", "protocol", "port", "serviceArn", "serviceId", "defaultAction"):
        assert g[k] == r[k], f"GetListener.{k} differs from the create response"
    assert g["port"] == 8080
    assert_timestamp(g["createdAt"], "createdAt")
    assert_timestamp(g["lastUpdatedAt"], "lastUpdatedAt")
    assert_no_none(strip_meta(g))


def test_get_listener_by_arns(lattice, res, svc, tg):
    r = res.listener(svc["id"], tg_id=tg["id"])
    g = lattice.get_listener(serviceIdentifier=svc["arn"], listenerIdentifier=r["arn"])
    assert g["id"] == r["id"]


def test_list_listeners(lattice, res, svc, tg):
    a = res.listener(svc["id"], tg_id=tg["id"], port=80)
    b = res.listener(svc["id"], defaultAction=fixed(500), protocol="HTTPS", port=443)
    items = list_all(lattice, "list_listeners", serviceIdentifier=svc["id"])
    assert sorted(i["id"] for i in items) == sorted([a["id"], b["id"]])
    ia = find_item(items, a["id"])
    assert ia["name"] == a["name"] and ia["protocol"] == "HTTP" and ia["port"] == 80 and ia["arn"] == a["arn"]
    assert_timestamp(ia["createdAt"], "items[].createdAt")
    assert_no_none(items)


def test_list_listeners_unknown_service(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE"):
        lattice.list_listeners(serviceIdentifier="svc-0123456789abcdef0")


def test_weights_are_echoed(res, svc, vpc):
    t1 = res.tg(vpc=vpc)
    t2 = res.tg(vpc=vpc)
    r = res.listener(svc["id"], defaultAction=forward(t1["id"], t2["id"], weights=[10, 20]))
    assert r["defaultAction"]["forward"]["targetGroups"] == [
        {"targetGroupIdentifier": t1["id"], "weight": 10},
        {"targetGroupIdentifier": t2["id"], "weight": 20},
    ]


def test_forward_accepts_target_group_arn(res, svc, tg):
    r = res.listener(svc["id"], defaultAction=forward(tg["arn"]))
    got = r["defaultAction"]["forward"]["targetGroups"][0]["targetGroupIdentifier"]
    assert got in (tg["id"], tg["arn"]), got


def test_target_group_records_service_arn(lattice, res, svc, tg):
    res.listener(svc["id"], tg_id=tg["id"])
    g = lattice.get_target_group(targetGroupIdentifier=tg["id"])
    assert svc["arn"] in g.get("serviceArns", []), "GetTargetGroup.serviceArns lists the service using it"


def test_fixed_response_404_and_500(res, svc):
    a = res.listener(svc["id"], defaultAction=fixed(404), port=80)
    b = res.listener(svc["id"], defaultAction=fixed(500), port=81)
    assert a["defaultAction"] == {"fixedResponse": {"statusCode": 404}}
    assert b["defaultAction"] == {"fixedResponse": {"statusCode": 500}}


@pytest.mark.parametrize("status", [200, 403, 503])
def test_fixed_response_other_status_rejected(lattice, svc, status):
    with raises(lattice, "ValidationException"):
        lattice.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="HTTP",
                                defaultAction=fixed(status))


def test_action_with_both_members_rejected(lattice_nv, svc, tg):
    action = {"forward": {"targetGroups": [{"targetGroupIdentifier": tg["id"]}]},
              "fixedResponse": {"statusCode": 404}}
    with raises(lattice_nv, "ValidationException"):
        lattice_nv.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="HTTP",
                                   defaultAction=action)


def test_update_default_action(lattice, res, svc, tg):
    r = res.listener(svc["id"], tg_id=tg["id"])
    u = lattice.update_listener(serviceIdentifier=svc["id"], listenerIdentifier=r["id"], defaultAction=fixed(404))
    assert u["id"] == r["id"] and u["arn"] == r["arn"] and u["port"] == r["port"]
    assert u["defaultAction"] == {"fixedResponse": {"statusCode": 404}}
    g = lattice.get_listener(serviceIdentifier=svc["id"], listenerIdentifier=r["id"])
    assert g["defaultAction"] == {"fixedResponse": {"statusCode": 404}}
    assert g["lastUpdatedAt"] >= g["createdAt"]


def test_update_weight(lattice, res, svc, tg):
    r = res.listener(svc["id"], tg_id=tg["id"])
    u = lattice.update_listener(serviceIdentifier=svc["id"], listenerIdentifier=r["id"],
                                defaultAction=forward(tg["id"], weights=[7]))
    assert u["defaultAction"]["forward"]["targetGroups"] == [{"targetGroupIdentifier": tg["id"], "weight": 7}]


def test_update_default_rule_is_visible_in_rules(lattice, res, svc, tg):
    r = res.listener(svc["id"], tg_id=tg["id"])
    lattice.update_listener(serviceIdentifier=svc["id"], listenerIdentifier=r["id"], defaultAction=fixed(500))
    rules = list_all(lattice, "list_rules", serviceIdentifier=svc["id"], listenerIdentifier=r["id"])
    default = [x for x in rules if x.get("isDefault")]
    assert len(default) == 1
    g = lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=r["id"], ruleIdentifier=default[0]["id"])
    assert g["action"] == {"fixedResponse": {"statusCode": 500}}


def test_duplicate_name_in_service_conflicts(lattice, res, svc, tg):
    r = res.listener(svc["id"], tg_id=tg["id"], port=80)
    with raises(lattice, "ConflictException", resourceType="LISTENER"):
        lattice.create_listener(serviceIdentifier=svc["id"], name=r["name"], protocol="HTTP", port=8081,
                                defaultAction=fixed(404))


def test_same_name_in_other_service_is_fine(res, svc):
    other = res.service()
    name = uname("l")
    res.listener(svc["id"], name=name)
    res.listener(other["id"], name=name)


def test_duplicate_port_in_service_conflicts(lattice, res, svc):
    res.listener(svc["id"], port=80)
    with raises(lattice, "ConflictException", resourceType="LISTENER"):
        lattice.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="HTTP", port=80,
                                defaultAction=fixed(404))


def test_target_group_used_by_two_services_conflicts(lattice, res, svc, tg):
    res.listener(svc["id"], tg_id=tg["id"])
    other = res.service()
    with raises(lattice, "ConflictException"):
        lattice.create_listener(serviceIdentifier=other["id"], name=uname("l"), protocol="HTTP",
                                defaultAction=forward(tg["id"]))


@pytest.mark.parametrize("bad", ["listener-abc", "Upper", "-lead", "trail-", "dou--ble", pytest.param("x" * 64, id="64-chars")])
def test_bad_names_rejected(lattice, svc, bad):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("name")):
        lattice.create_listener(serviceIdentifier=svc["id"], name=bad, protocol="HTTP", defaultAction=fixed(404))


def test_bad_protocol_rejected(lattice, svc):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("protocol")):
        lattice.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="FTP", defaultAction=fixed(404))


def test_port_out_of_range_rejected(lattice, svc):
    with raises(lattice, "ValidationException", fieldList=has_field("port")):
        lattice.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="HTTP", port=70000,
                                defaultAction=fixed(404))


def test_forward_to_unknown_target_group(lattice, svc):
    with raises(lattice, "ResourceNotFoundException", resourceType="TARGET_GROUP"):
        lattice.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="HTTP",
                                defaultAction=forward("tg-0123456789abcdef0"))


def test_create_on_unknown_service(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE", resourceId="svc-0123456789abcdef0"):
        lattice.create_listener(serviceIdentifier="svc-0123456789abcdef0", name=uname("l"), protocol="HTTP",
                                defaultAction=fixed(404))


def test_get_unknown_listener(lattice, svc):
    with raises(lattice, "ResourceNotFoundException", resourceType="LISTENER",
                resourceId="listener-0123456789abcdef0"):
        lattice.get_listener(serviceIdentifier=svc["id"], listenerIdentifier="listener-0123456789abcdef0")


def test_listener_of_other_service_is_not_found(lattice, res, svc):
    r = res.listener(svc["id"])
    other = res.service()
    with raises(lattice, "ResourceNotFoundException", resourceType="LISTENER"):
        lattice.get_listener(serviceIdentifier=other["id"], listenerIdentifier=r["id"])


def test_delete_listener(lattice, res, svc, tg):
    r = res.listener(svc["id"], tg_id=tg["id"])
    d = lattice.delete_listener(serviceIdentifier=svc["id"], listenerIdentifier=r["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    becomes_gone(lattice, lambda: lattice.get_listener(serviceIdentifier=svc["id"], listenerIdentifier=r["id"]),
                 "deleted listener", resource_type="LISTENER")
    assert list_all(lattice, "list_listeners", serviceIdentifier=svc["id"]) == []
