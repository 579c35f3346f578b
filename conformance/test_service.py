"""CreateService, GetService, ListServices, UpdateService, DeleteService."""

import re

import pytest

from support import (
    HEX17, REGION, arn, assert_id, assert_no_none, assert_timestamp, becomes_active, becomes_gone,
    find_item, has_field, import_certificate, list_all, raises, service_dns_name, strip_meta, uname,
)


@pytest.fixture(scope="module")
def cert_arn(acm):
    """An ACM certificate the services of this module may name (CreateService refuses an ARN
    that names no certificate)."""
    return import_certificate(acm, ["svc.example.com", "*.example.com"])


def test_create_response_shape(lattice, res):
    name = uname("svc")
    r = res.service(name=name)
    assert_id(r["id"], "svc", "service")
    assert r["arn"] == arn(f"service/{r['id']}")
    assert r["name"] == name
    assert r["status"] == "CREATE_IN_PROGRESS", "CreateService answers CREATE_IN_PROGRESS"
    assert r["authType"] == "NONE", "authType defaults to NONE"
    assert r["dnsEntry"]["domainName"] == service_dns_name(name, r["id"])
    assert r["dnsEntry"].get("hostedZoneId"), "dnsEntry.hostedZoneId must be set"
    assert "customDomainName" not in r, "unset customDomainName must be absent"
    assert "certificateArn" not in r, "unset certificateArn must be absent"
    if "idleTimeoutSeconds" in r:
        assert r["idleTimeoutSeconds"] == 60, "idleTimeoutSeconds defaults to 60"
    assert_no_none(strip_meta(r))


def test_dns_name_format(res):
    r = res.service()
    dn = r["dnsEntry"]["domainName"]
    assert re.fullmatch(rf"{re.escape(r['name'])}-{HEX17}\.[0-9a-f]{{7}}\.vpc-lattice-svcs\.{REGION}\.on\.aws", dn), dn
    assert dn.endswith(".on.aws")


def test_becomes_active_with_timestamps(lattice, res):
    r = res.service()
    g = becomes_active(lambda: lattice.get_service(serviceIdentifier=r["id"]), "service")
    for k in ("id", "name", "arn", "authType", "dnsEntry"):
        assert g[k] == r[k], f"GetService.{k} differs from the create response"
    assert_timestamp(g["createdAt"], "createdAt")
    assert_timestamp(g["lastUpdatedAt"], "lastUpdatedAt")
    assert "customDomainName" not in g
    assert "certificateArn" not in g
    assert "failureCode" not in g and "failureMessage" not in g
    assert_no_none(strip_meta(g))


def test_get_by_arn(lattice, res):
    r = res.service()
    assert lattice.get_service(serviceIdentifier=r["arn"])["id"] == r["id"]


def test_custom_domain_and_certificate_are_echoed(lattice, res, cert_arn):
    domain = f"{uname('d')}.example.com"
    r = res.service(customDomainName=domain, certificateArn=cert_arn, authType="AWS_IAM")
    assert r["customDomainName"] == domain
    assert r["certificateArn"] == cert_arn
    assert r["authType"] == "AWS_IAM"
    g = lattice.get_service(serviceIdentifier=r["id"])
    assert g["customDomainName"] == domain
    assert g["certificateArn"] == cert_arn


def test_idle_timeout_is_echoed(lattice, res):
    r = res.service(idleTimeoutSeconds=120)
    assert r["idleTimeoutSeconds"] == 120
    assert lattice.get_service(serviceIdentifier=r["id"])["idleTimeoutSeconds"] == 120


@pytest.mark.parametrize("value", [59, 601])
def test_idle_timeout_out_of_range(lattice_nv, value):
    with raises(lattice_nv, "ValidationException", fieldList=has_field("idleTimeoutSeconds")):
        lattice_nv.create_service(name=uname("svc"), idleTimeoutSeconds=value)


def test_list_contains_summary(lattice, res):
    r = res.service()
    items = list_all(lattice, "list_services")
    item = find_item(items, r["id"])
    assert item is not None, "ListServices does not list the new service"
    assert item["name"] == r["name"]
    assert item["arn"] == r["arn"]
    assert item["dnsEntry"]["domainName"] == r["dnsEntry"]["domainName"]
    assert item["status"] in ("CREATE_IN_PROGRESS", "ACTIVE")
    assert "customDomainName" not in item
    assert_timestamp(item["createdAt"], "items[].createdAt")
    assert_no_none(item)


def test_update_auth_type_and_idle_timeout(lattice, res):
    r = res.service()
    u = lattice.update_service(serviceIdentifier=r["id"], authType="AWS_IAM", idleTimeoutSeconds=300)
    assert u["id"] == r["id"] and u["arn"] == r["arn"] and u["name"] == r["name"]
    assert u["authType"] == "AWS_IAM"
    assert u["idleTimeoutSeconds"] == 300
    g = lattice.get_service(serviceIdentifier=r["id"])
    assert g["authType"] == "AWS_IAM"
    assert g["idleTimeoutSeconds"] == 300
    assert g["lastUpdatedAt"] >= g["createdAt"]


def test_update_certificate(lattice, res, cert_arn):
    r = res.service(customDomainName=f"{uname('d')}.example.com")
    u = lattice.update_service(serviceIdentifier=r["id"], certificateArn=cert_arn)
    assert u["certificateArn"] == cert_arn
    assert lattice.get_service(serviceIdentifier=r["id"])["certificateArn"] == cert_arn


def test_update_unknown_is_not_found(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE", resourceId="svc-0123456789abcdef0"):
        lattice.update_service(serviceIdentifier="svc-0123456789abcdef0", authType="NONE")


def test_delete_returns_delete_in_progress_then_gone(lattice, res):
    r = res.service()
    becomes_active(lambda: lattice.get_service(serviceIdentifier=r["id"]), "service")
    d = lattice.delete_service(serviceIdentifier=r["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert d["id"] == r["id"]
    assert d["arn"] == r["arn"]
    assert d["name"] == r["name"]
    assert d["status"] == "DELETE_IN_PROGRESS"
    becomes_gone(lattice, lambda: lattice.get_service(serviceIdentifier=r["id"]), "deleted service",
                 resource_type="SERVICE")


def test_delete_cascades_listeners(lattice, res, tg):
    r = res.service()
    lst = res.listener(r["id"], tg_id=tg["id"])
    lattice.delete_service(serviceIdentifier=r["id"])
    becomes_gone(lattice, lambda: lattice.get_service(serviceIdentifier=r["id"]), "deleted service")
    with raises(lattice, "ResourceNotFoundException"):
        lattice.get_listener(serviceIdentifier=r["id"], listenerIdentifier=lst["id"])
    # The target group is no longer referenced, so it can be deleted.
    d = lattice.delete_target_group(targetGroupIdentifier=tg["id"])
    assert d["status"] == "DELETE_IN_PROGRESS"


def test_delete_unknown_is_not_found(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE", resourceId="svc-0123456789abcdef0"):
        lattice.delete_service(serviceIdentifier="svc-0123456789abcdef0")


def test_duplicate_name_conflicts(lattice, res):
    r = res.service()
    with raises(lattice, "ConflictException", resourceType="SERVICE"):
        res.service(name=r["name"])


@pytest.mark.parametrize("bad", ["svc-reserved", "Upper", "-lead", "trail-", "dou--ble", pytest.param("a" * 41, id="41-chars"), "sp ace"])
def test_bad_names_are_rejected(lattice, bad):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("name")):
        lattice.create_service(name=bad)


def test_bad_certificate_arn_is_rejected(lattice):
    with raises(lattice, "ValidationException", fieldList=has_field("certificateArn")):
        lattice.create_service(name=uname("svc"), certificateArn="not-a-certificate-arn")


def test_bad_auth_type_is_rejected(lattice):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("authType")):
        lattice.create_service(name=uname("svc"), authType="SIGV4")
