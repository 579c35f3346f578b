"""CreateServiceNetwork, GetServiceNetwork, ListServiceNetworks, UpdateServiceNetwork,
DeleteServiceNetwork."""

import pytest

from support import (
    arn, assert_id, assert_no_none, assert_timestamp, becomes_gone, find_item, has_field, list_all,
    raises, strip_meta, uname,
)


def test_create_returns_id_arn_name_and_default_auth_type(lattice, res):
    name = uname("sn")
    r = res.sn(name=name)
    assert_id(r["id"], "sn", "service network")
    assert r["arn"] == arn(f"servicenetwork/{r['id']}")
    assert r["name"] == name
    assert r["authType"] == "NONE", "authType defaults to NONE and is echoed"
    assert "status" not in r, "service networks have no status member"
    assert_no_none(strip_meta(r))


def test_create_with_aws_iam_auth_type(res):
    r = res.sn(authType="AWS_IAM")
    assert r["authType"] == "AWS_IAM"


def test_get_returns_timestamps_and_zero_counts(lattice, res):
    created = res.sn()
    g = lattice.get_service_network(serviceNetworkIdentifier=created["id"])
    for k in ("id", "name", "arn", "authType"):
        assert g[k] == created[k], f"GetServiceNetwork.{k} differs from the create response"
    assert_timestamp(g["createdAt"], "createdAt")
    assert_timestamp(g["lastUpdatedAt"], "lastUpdatedAt")
    assert g["lastUpdatedAt"] >= g["createdAt"]
    assert g.get("numberOfAssociatedVPCs") == 0, "a new service network has 0 associated VPCs"
    assert g.get("numberOfAssociatedServices") == 0, "a new service network has 0 associated services"
    assert_no_none(strip_meta(g))


def test_get_by_arn(lattice, res):
    created = res.sn()
    g = lattice.get_service_network(serviceNetworkIdentifier=created["arn"])
    assert g["id"] == created["id"]


def test_list_contains_summary(lattice, res):
    created = res.sn()
    items = list_all(lattice, "list_service_networks")
    item = find_item(items, created["id"])
    assert item is not None, "ListServiceNetworks does not list the new service network"
    assert item["name"] == created["name"]
    assert item["arn"] == created["arn"]
    assert_timestamp(item["createdAt"], "items[].createdAt")
    assert_no_none(item)


def test_update_auth_type(lattice, res):
    created = res.sn()
    u = lattice.update_service_network(serviceNetworkIdentifier=created["id"], authType="AWS_IAM")
    assert u["id"] == created["id"]
    assert u["arn"] == created["arn"]
    assert u["name"] == created["name"]
    assert u["authType"] == "AWS_IAM"
    g = lattice.get_service_network(serviceNetworkIdentifier=created["id"])
    assert g["authType"] == "AWS_IAM"
    assert g["lastUpdatedAt"] >= g["createdAt"]


def test_update_bad_auth_type_is_rejected(lattice, res):
    created = res.sn()
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("authType")):
        lattice.update_service_network(serviceNetworkIdentifier=created["id"], authType="BOGUS")


def test_update_unknown_is_not_found(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK",
                resourceId="sn-0123456789abcdef0"):
        lattice.update_service_network(serviceNetworkIdentifier="sn-0123456789abcdef0", authType="NONE")


def test_duplicate_name_conflicts(lattice, res):
    created = res.sn()
    with raises(lattice, "ConflictException", resourceType="SERVICE_NETWORK"):
        res.sn(name=created["name"])


@pytest.mark.parametrize("bad", ["Upper-case", "-leading", "trailing-", "double--hyphen", "under_score",
                                 pytest.param("a" * 64, id="64-chars"), "dot.ted"])
def test_bad_names_are_rejected(lattice, bad):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("name")):
        lattice.create_service_network(name=bad)


def test_bad_auth_type_is_rejected(lattice):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("authType")):
        lattice.create_service_network(name=uname("sn"), authType="BOGUS")


def test_delete_then_get_is_not_found(lattice, res):
    created = res.sn()
    d = lattice.delete_service_network(serviceNetworkIdentifier=created["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    becomes_gone(lattice, lambda: lattice.get_service_network(serviceNetworkIdentifier=created["id"]),
                 "deleted service network", resource_type="SERVICE_NETWORK")
    items = list_all(lattice, "list_service_networks")
    assert find_item(items, created["id"]) is None, "a deleted service network is still listed"


def test_name_is_reusable_after_delete(lattice, res):
    created = res.sn()
    lattice.delete_service_network(serviceNetworkIdentifier=created["id"])
    becomes_gone(lattice, lambda: lattice.get_service_network(serviceNetworkIdentifier=created["id"]),
                 "deleted service network")
    again = res.sn(name=created["name"])
    assert again["id"] != created["id"], "a re-created service network must get a new id"


def test_delete_unknown_is_not_found(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK",
                resourceId="sn-0123456789abcdef0"):
        lattice.delete_service_network(serviceNetworkIdentifier="sn-0123456789abcdef0")


def test_tags_on_create_are_listed(lattice, res):
    created = res.sn(tags={"team": "net", "env": "test"})
    tags = lattice.list_tags_for_resource(resourceArn=created["arn"])["tags"]
    assert tags == {"team": "net", "env": "test"}
