"""CreateTargetGroup, GetTargetGroup, ListTargetGroups, UpdateTargetGroup, DeleteTargetGroup."""

import pytest

from support import (
    arn, assert_id, assert_no_none, assert_timestamp, becomes_active, becomes_gone, find_item, has_field,
    list_all, raises, strip_meta, uname,
)

DEFAULT_HTTP1_HEALTH_CHECK = {
    "enabled": True,
    "healthCheckIntervalSeconds": 30,
    "healthCheckTimeoutSeconds": 5,
    "healthyThresholdCount": 5,
    "unhealthyThresholdCount": 2,
    "matcher": {"httpCode": "200"},
    "path": "/",
    "protocolVersion": "HTTP1",
}


def assert_default_health_check(hc, protocol):
    for k, v in DEFAULT_HTTP1_HEALTH_CHECK.items():
        assert hc.get(k) == v, f"config.healthCheck.{k}: expected default {v!r}, got {hc.get(k)!r} (full: {hc})"
    assert hc.get("protocol") == protocol, f"health-check protocol defaults to the TG protocol {protocol}: {hc}"


def test_create_ip_target_group_echoes_defaulted_config(lattice, res, vpc):
    name = uname("tg")
    r = res.tg(name=name, config={"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc})
    assert_id(r["id"], "tg", "target group")
    assert r["arn"] == arn(f"targetgroup/{r['id']}")
    assert r["name"] == name
    assert r["type"] == "IP"
    assert r["status"] == "CREATE_IN_PROGRESS"
    c = r["config"]
    assert c["port"] == 8080 and c["protocol"] == "HTTP" and c["vpcIdentifier"] == vpc
    assert c.get("protocolVersion", "HTTP1") == "HTTP1"
    assert c.get("ipAddressType", "IPV4") == "IPV4"
    assert_default_health_check(c["healthCheck"], "HTTP")
    assert_no_none(strip_meta(r))


def test_https_health_check_protocol_defaults_to_https(res, vpc):
    r = res.tg(config={"port": 443, "protocol": "HTTPS", "vpcIdentifier": vpc, "protocolVersion": "HTTP1"})
    assert_default_health_check(r["config"]["healthCheck"], "HTTPS")


def test_default_port_for_protocol(res, vpc):
    http = res.tg(config={"protocol": "HTTP", "vpcIdentifier": vpc})
    https = res.tg(config={"protocol": "HTTPS", "vpcIdentifier": vpc})
    assert http["config"]["port"] == 80
    assert https["config"]["port"] == 443


def test_partial_health_check_is_completed_with_defaults(res, vpc):
    r = res.tg(config={"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc,
                       "healthCheck": {"path": "/health", "matcher": {"httpCode": "200-299"}}})
    hc = r["config"]["healthCheck"]
    assert hc["path"] == "/health"
    assert hc["matcher"] == {"httpCode": "200-299"}
    assert hc["enabled"] is True
    assert hc["healthCheckIntervalSeconds"] == 30
    assert hc["healthyThresholdCount"] == 5


def test_becomes_active_with_timestamps(lattice, res, vpc):
    r = res.tg(vpc=vpc)
    g = becomes_active(lambda: lattice.get_target_group(targetGroupIdentifier=r["id"]), "target group")
    for k in ("id", "arn", "name", "type", "config"):
        assert g[k] == r[k], f"GetTargetGroup.{k} differs from the create response"
    assert_timestamp(g["createdAt"], "createdAt")
    assert_timestamp(g["lastUpdatedAt"], "lastUpdatedAt")
    assert g.get("serviceArns", []) == [], "an unused target group has no serviceArns"
    assert "failureCode" not in g and "failureMessage" not in g
    assert_no_none(strip_meta(g))


def test_get_by_arn(lattice, res):
    r = res.tg()
    assert lattice.get_target_group(targetGroupIdentifier=r["arn"])["id"] == r["id"]


def test_lambda_target_group_needs_no_config(lattice, res):
    r = res.tg(type="LAMBDA")
    assert r["type"] == "LAMBDA"
    c = r.get("config", {})
    assert "vpcIdentifier" not in c and "port" not in c, f"a LAMBDA target group has no port/VPC: {c}"


def test_ip_target_group_without_config_rejected(lattice):
    with raises(lattice, "ValidationException"):
        lattice.create_target_group(name=uname("tg"), type="IP")


def test_unknown_vpc_is_not_found(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="VPC", resourceId="vpc-0123456789abcdef0"):
        lattice.create_target_group(name=uname("tg"), type="IP",
                                    config={"port": 80, "protocol": "HTTP", "vpcIdentifier": "vpc-0123456789abcdef0"})


def test_list_target_groups_and_filters(lattice, res, vpc):
    a = res.tg(vpc=vpc)
    lam = res.tg(type="LAMBDA")
    other_vpc = res.vpc(cidr="10.1.0.0/16")
    b = res.tg(vpc=other_vpc)
    items = list_all(lattice, "list_target_groups")
    ia = find_item(items, a["id"])
    assert ia is not None, "ListTargetGroups does not list the new target group"
    assert ia["name"] == a["name"] and ia["arn"] == a["arn"] and ia["type"] == "IP"
    assert ia["port"] == 8080 and ia["protocol"] == "HTTP" and ia["vpcIdentifier"] == vpc
    assert ia["status"] in ("CREATE_IN_PROGRESS", "ACTIVE")
    assert_timestamp(ia["createdAt"], "items[].createdAt")
    assert_no_none(items)
    by_vpc = list_all(lattice, "list_target_groups", vpcIdentifier=vpc)
    assert a["id"] in {i["id"] for i in by_vpc}
    assert all(i.get("vpcIdentifier") == vpc for i in by_vpc), "vpcIdentifier filter leaks other VPCs"
    assert b["id"] not in {i["id"] for i in by_vpc}
    by_type = list_all(lattice, "list_target_groups", targetGroupType="LAMBDA")
    assert lam["id"] in {i["id"] for i in by_type}
    assert all(i["type"] == "LAMBDA" for i in by_type), "targetGroupType filter leaks other types"


def test_update_health_check(lattice, res):
    r = res.tg()
    u = lattice.update_target_group(targetGroupIdentifier=r["id"], healthCheck={
        "path": "/healthz", "healthCheckIntervalSeconds": 10, "healthyThresholdCount": 3,
        "matcher": {"httpCode": "200,202"}})
    assert u["id"] == r["id"] and u["arn"] == r["arn"] and u["name"] == r["name"] and u["type"] == "IP"
    hc = u["config"]["healthCheck"]
    assert hc["path"] == "/healthz"
    assert hc["healthCheckIntervalSeconds"] == 10
    assert hc["healthyThresholdCount"] == 3
    assert hc["matcher"] == {"httpCode": "200,202"}
    assert hc["healthCheckTimeoutSeconds"] == 5, "members not given keep their value"
    assert u["config"]["port"] == 8080, "UpdateTargetGroup does not touch the rest of config"
    g = lattice.get_target_group(targetGroupIdentifier=r["id"])
    assert g["config"]["healthCheck"] == hc
    assert g["lastUpdatedAt"] >= g["createdAt"]


def test_update_zero_resets_to_default(lattice, res):
    r = res.tg()
    lattice.update_target_group(targetGroupIdentifier=r["id"], healthCheck={"healthCheckIntervalSeconds": 60})
    u = lattice.update_target_group(targetGroupIdentifier=r["id"], healthCheck={"healthCheckIntervalSeconds": 0})
    assert u["config"]["healthCheck"]["healthCheckIntervalSeconds"] == 30, "0 resets a health-check setting"


def test_disable_health_check(lattice, res):
    r = res.tg()
    u = lattice.update_target_group(targetGroupIdentifier=r["id"], healthCheck={"enabled": False})
    assert u["config"]["healthCheck"]["enabled"] is False


@pytest.mark.parametrize("hc,field", [
    ({"healthCheckIntervalSeconds": 3}, "healthCheckIntervalSeconds"),
    ({"healthCheckIntervalSeconds": 301}, "healthCheckIntervalSeconds"),
    ({"healthyThresholdCount": 1}, "healthyThresholdCount"),
    ({"unhealthyThresholdCount": 11}, "unhealthyThresholdCount"),
    ({"healthCheckTimeoutSeconds": 121}, "healthCheckTimeoutSeconds"),
    ({"path": "no-slash"}, "path"),
])
def test_update_health_check_out_of_range(lattice, res, hc, field):
    r = res.tg()
    with raises(lattice, "ValidationException", fieldList=has_field(field)):
        lattice.update_target_group(targetGroupIdentifier=r["id"], healthCheck=hc)


def test_update_unknown_is_not_found(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="TARGET_GROUP", resourceId="tg-0123456789abcdef0"):
        lattice.update_target_group(targetGroupIdentifier="tg-0123456789abcdef0", healthCheck={"enabled": False})


def test_duplicate_name_conflicts(lattice, res, vpc):
    r = res.tg(vpc=vpc)
    with raises(lattice, "ConflictException", resourceType="TARGET_GROUP"):
        res.tg(vpc=vpc, name=r["name"])


@pytest.mark.parametrize("bad", ["tg-reserved", "UPPER", "-lead", "trail-", "dou--ble", pytest.param("z" * 129, id="129-chars")])
def test_bad_names_rejected(lattice, vpc, bad):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("name")):
        lattice.create_target_group(name=bad, type="IP", config={"port": 80, "protocol": "HTTP", "vpcIdentifier": vpc})


def test_bad_type_rejected(lattice, vpc):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("type")):
        lattice.create_target_group(name=uname("tg"), type="CONTAINER",
                                    config={"port": 80, "protocol": "HTTP", "vpcIdentifier": vpc})


def test_bad_protocol_rejected(lattice, vpc):
    with raises(lattice, "ValidationException", fieldList=has_field("protocol")):
        lattice.create_target_group(name=uname("tg"), type="IP",
                                    config={"port": 80, "protocol": "UDP", "vpcIdentifier": vpc})


def test_delete_returns_delete_in_progress_then_gone(lattice, res):
    r = res.tg()
    becomes_active(lambda: lattice.get_target_group(targetGroupIdentifier=r["id"]), "target group")
    d = lattice.delete_target_group(targetGroupIdentifier=r["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert d["id"] == r["id"] and d["arn"] == r["arn"]
    assert d["status"] == "DELETE_IN_PROGRESS"
    becomes_gone(lattice, lambda: lattice.get_target_group(targetGroupIdentifier=r["id"]), "deleted target group",
                 resource_type="TARGET_GROUP")


def test_delete_in_use_conflicts(lattice, res, svc):
    t = res.tg()
    res.listener(svc["id"], tg_id=t["id"])
    with raises(lattice, "ConflictException", resourceType="TARGET_GROUP"):
        lattice.delete_target_group(targetGroupIdentifier=t["id"])


def test_delete_unknown_is_not_found(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="TARGET_GROUP", resourceId="tg-0123456789abcdef0"):
        lattice.delete_target_group(targetGroupIdentifier="tg-0123456789abcdef0")
