"""CreateAccessLogSubscription, GetAccessLogSubscription, ListAccessLogSubscriptions,
UpdateAccessLogSubscription, DeleteAccessLogSubscription."""

from support import (
    ACCOUNT, REGION, arn, assert_id, assert_no_none, assert_timestamp, becomes_gone, list_all, raises, strip_meta,
    uname,
)


def log_group(name=None):
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name or uname('lg')}"


def s3_bucket():
    return f"arn:aws:s3:::{uname('bucket')}"


def firehose():
    return f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{uname('fh')}"


def test_create_on_service_network(lattice, res, sn):
    dest = log_group()
    r = res.als(sn["id"], destination=dest)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert_id(r["id"], "als", "access log subscription")
    assert r["arn"] == arn(f"accesslogsubscription/{r['id']}")
    assert r["resourceId"] == sn["id"]
    assert r["resourceArn"] == sn["arn"]
    assert r["destinationArn"] == dest
    assert_no_none(strip_meta(r))


def test_create_on_service_by_arn(lattice, res, svc):
    r = res.als(svc["arn"], destination=s3_bucket())
    assert r["resourceId"] == svc["id"]
    assert r["resourceArn"] == svc["arn"]


def test_service_network_log_type_is_echoed(res, sn):
    r = res.als(sn["id"], destination=firehose(), serviceNetworkLogType="SERVICE")
    assert r["serviceNetworkLogType"] == "SERVICE"


def test_get(lattice, res, sn):
    r = res.als(sn["id"])
    g = lattice.get_access_log_subscription(accessLogSubscriptionIdentifier=r["id"])
    for k in ("id", "arn", "resourceId", "resourceArn", "destinationArn"):
        assert g[k] == r[k], f"GetAccessLogSubscription.{k} differs from the create response"
    assert_timestamp(g["createdAt"], "createdAt")
    assert_timestamp(g["lastUpdatedAt"], "lastUpdatedAt")
    assert_no_none(strip_meta(g))
    assert lattice.get_access_log_subscription(accessLogSubscriptionIdentifier=r["arn"])["id"] == r["id"]


def test_list_by_resource(lattice, res, sn, svc):
    a = res.als(sn["id"], destination=log_group())
    b = res.als(sn["id"], destination=s3_bucket())
    c = res.als(svc["id"], destination=log_group())
    items = list_all(lattice, "list_access_log_subscriptions", resourceIdentifier=sn["id"])
    assert sorted(i["id"] for i in items) == sorted([a["id"], b["id"]])
    for i in items:
        assert i["resourceId"] == sn["id"] and i["resourceArn"] == sn["arn"]
        assert_timestamp(i["createdAt"], "items[].createdAt")
    assert_no_none(items)
    by_arn = list_all(lattice, "list_access_log_subscriptions", resourceIdentifier=svc["arn"])
    assert [i["id"] for i in by_arn] == [c["id"]]


def test_one_subscription_per_destination_type(lattice, res, sn):
    res.als(sn["id"], destination=log_group())
    with raises(lattice, "ConflictException", resourceType="ACCESS_LOG_SUBSCRIPTION"):
        lattice.create_access_log_subscription(resourceIdentifier=sn["id"], destinationArn=log_group())


def test_update_destination(lattice, res, sn):
    r = res.als(sn["id"], destination=log_group())
    new = log_group()
    u = lattice.update_access_log_subscription(accessLogSubscriptionIdentifier=r["id"], destinationArn=new)
    assert u["id"] == r["id"] and u["arn"] == r["arn"] and u["resourceId"] == sn["id"]
    assert u["destinationArn"] == new
    g = lattice.get_access_log_subscription(accessLogSubscriptionIdentifier=r["id"])
    assert g["destinationArn"] == new
    assert g["lastUpdatedAt"] >= g["createdAt"]


def test_bad_destination_rejected(lattice, sn):
    with raises(lattice, "ValidationException"):
        lattice.create_access_log_subscription(resourceIdentifier=sn["id"], destinationArn="this-is-not-an-arn-at-all")


def test_unknown_resource(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK"):
        lattice.create_access_log_subscription(resourceIdentifier="sn-0123456789abcdef0", destinationArn=log_group())
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE"):
        lattice.create_access_log_subscription(resourceIdentifier="svc-0123456789abcdef0", destinationArn=log_group())


def test_delete(lattice, res, sn):
    r = res.als(sn["id"])
    d = lattice.delete_access_log_subscription(accessLogSubscriptionIdentifier=r["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    becomes_gone(lattice, lambda: lattice.get_access_log_subscription(accessLogSubscriptionIdentifier=r["id"]),
                 "deleted access log subscription", resource_type="ACCESS_LOG_SUBSCRIPTION")
    assert list_all(lattice, "list_access_log_subscriptions", resourceIdentifier=sn["id"]) == []


def test_get_unknown(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="ACCESS_LOG_SUBSCRIPTION",
                resourceId="als-0123456789abcdef0"):
        lattice.get_access_log_subscription(accessLogSubscriptionIdentifier="als-0123456789abcdef0")


def test_deleting_service_network_removes_subscriptions(lattice, res):
    sn = res.sn()
    r = res.als(sn["id"])
    lattice.delete_service_network(serviceNetworkIdentifier=sn["id"])
    becomes_gone(lattice, lambda: lattice.get_access_log_subscription(accessLogSubscriptionIdentifier=r["id"]),
                 "access log subscription of a deleted service network")
