"""Error rendering: unparsable bodies, bad enums/names, missing members, unknown ids, ARN-form ids,
unknown and unimplemented (P2) operations."""

import json
import urllib.parse

import pytest

from support import (
    ACCOUNT, OTHER_REGION, VALIDATION_REASONS, arn, check_error, has_field, raw_request, raises, uname,
)

UNKNOWN = {
    "sn": "sn-0123456789abcdef0",
    "svc": "svc-0123456789abcdef0",
    "tg": "tg-0123456789abcdef0",
    "listener": "listener-0123456789abcdef0",
    "rule": "rule-0123456789abcdef0",
    "snva": "snva-0123456789abcdef0",
    "snsa": "snsa-0123456789abcdef0",
    "als": "als-0123456789abcdef0",
}


def assert_raw_validation(resp, reason=None):
    assert resp.status == 400, f"expected HTTP 400, got {resp}"
    assert resp.error_type() == "ValidationException", f"expected ValidationException, got {resp}"
    assert resp.headers.get("x-amzn-errortype", "").startswith("ValidationException"), (
        f"errors carry x-amzn-ErrorType: {resp.headers}")
    assert resp.headers.get("content-type", "").startswith("application/json")
    assert resp.headers.get("x-amzn-requestid"), "every response carries x-amzn-RequestId"
    doc = resp.json()
    assert doc.get("message"), f"no message in {doc}"
    assert doc.get("reason") in VALIDATION_REASONS, f"reason {doc.get('reason')!r} not in {VALIDATION_REASONS}"
    if reason:
        assert doc["reason"] == reason, f"expected reason {reason}, got {doc}"
    return doc


# ---------------------------------------------------------------------------------------------
# Unparsable bodies (raw HTTP)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b'{"name": "abc"', b"\xff\xfe\x00garbage"])
def test_bad_json_is_cannot_parse(endpoint, body):
    r = raw_request(endpoint, "POST", "/services", body=body)
    assert_raw_validation(r, reason="cannotParse")


@pytest.mark.parametrize("path", ["/servicenetworks", "/targetgroups", "/servicenetworkvpcassociations"])
def test_bad_json_on_other_creates(endpoint, path):
    assert_raw_validation(raw_request(endpoint, "POST", path, body=b"[}"), reason="cannotParse")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"a string"', b'{"name": 123}', b'{"name": ["x"]}'])
def test_wrong_json_types_rejected(endpoint, body):
    assert_raw_validation(raw_request(endpoint, "POST", "/services", body=body))


def test_unsigned_raw_create_works(endpoint, lattice, res):
    name = uname("raw")
    r = raw_request(endpoint, "POST", "/services", body=json.dumps({"name": name}).encode(), sign=False)
    assert r.status == 201, r
    doc = r.json()
    res.track("service", doc["id"])
    assert doc["name"] == name
    assert lattice.get_service(serviceIdentifier=doc["id"])["name"] == name


# ---------------------------------------------------------------------------------------------
# Bad enums, names, missing members
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call,field", ids=["CreateService", "CreateServiceNetwork", "CreateTargetGroup",
                                            "ListTargetGroups"], argvalues=[
    (lambda la: la.create_service(name=uname("svc"), authType="bogus"), "authType"),
    (lambda la: la.create_service_network(name=uname("sn"), authType="none"), "authType"),
    (lambda la: la.create_target_group(name=uname("tg"), type="ip",
                                       config={"port": 80, "protocol": "HTTP", "vpcIdentifier": "vpc-0123456789abcdef0"}),
     "type"),
    (lambda la: la.list_target_groups(targetGroupType="KUBERNETES"), "targetGroupType"),
])
def test_bad_enum(lattice, call, field):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field(field)):
        call(lattice)


def test_bad_name_field_list(lattice):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed") as ei:
        lattice.create_service(name="Not_Valid")
    fl = ei.value.response["fieldList"]
    assert fl and all(f.get("name") and f.get("message") for f in fl), f"fieldList entries need name+message: {fl}"
    assert has_field("name")(fl)


@pytest.mark.parametrize("call,field", ids=[
    "CreateService", "CreateServiceNetwork", "CreateTargetGroup", "CreateServiceNetworkVpcAssociation",
    "UpdateServiceNetwork", "PutAuthPolicy", "RegisterTargets", "TagResource"], argvalues=[
    (lambda la: la.create_service(), "name"),
    (lambda la: la.create_service_network(), "name"),
    (lambda la: la.create_target_group(name=uname("tg")), "type"),
    (lambda la: la.create_service_network_vpc_association(serviceNetworkIdentifier=UNKNOWN["sn"]), "vpcIdentifier"),
    (lambda la: la.update_service_network(serviceNetworkIdentifier=UNKNOWN["sn"]), "authType"),
    (lambda la: la.put_auth_policy(resourceIdentifier=UNKNOWN["svc"]), "policy"),
    (lambda la: la.register_targets(targetGroupIdentifier=UNKNOWN["tg"]), "targets"),
    (lambda la: la.tag_resource(resourceArn=arn("service/" + UNKNOWN["svc"])), "tags"),
])
def test_missing_required_member(lattice_nv, call, field):
    with raises(lattice_nv, "ValidationException", fieldList=has_field(field)):
        call(lattice_nv)


def test_missing_member_raw_empty_object(endpoint):
    doc = assert_raw_validation(raw_request(endpoint, "POST", "/servicenetworks", body=b"{}"))
    assert has_field("name")(doc.get("fieldList")), doc


def test_missing_body_entirely(endpoint):
    assert_raw_validation(raw_request(endpoint, "POST", "/services", body=b""))


def test_validation_comes_before_existence(lattice):
    # bad enum on an unknown service: the 400 wins over the 404
    with raises(lattice, "ValidationException"):
        lattice.update_service(serviceIdentifier=UNKNOWN["svc"], authType="BOGUS")


# ---------------------------------------------------------------------------------------------
# Unknown and malformed identifiers
# ---------------------------------------------------------------------------------------------

NOT_FOUND_CALLS = [
    (lambda la: la.get_service_network(serviceNetworkIdentifier=UNKNOWN["sn"]), "SERVICE_NETWORK", UNKNOWN["sn"]),
    (lambda la: la.get_service(serviceIdentifier=UNKNOWN["svc"]), "SERVICE", UNKNOWN["svc"]),
    (lambda la: la.get_target_group(targetGroupIdentifier=UNKNOWN["tg"]), "TARGET_GROUP", UNKNOWN["tg"]),
    (lambda la: la.get_listener(serviceIdentifier=UNKNOWN["svc"], listenerIdentifier=UNKNOWN["listener"]),
     "SERVICE", UNKNOWN["svc"]),
    (lambda la: la.get_rule(serviceIdentifier=UNKNOWN["svc"], listenerIdentifier=UNKNOWN["listener"],
                            ruleIdentifier=UNKNOWN["rule"]), "SERVICE", UNKNOWN["svc"]),
    (lambda la: la.get_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=UNKNOWN["snva"]),
     "SERVICE_NETWORK_VPC_ASSOCIATION", UNKNOWN["snva"]),
    (lambda la: la.get_service_network_service_association(
        serviceNetworkServiceAssociationIdentifier=UNKNOWN["snsa"]),
     "SERVICE_NETWORK_SERVICE_ASSOCIATION", UNKNOWN["snsa"]),
    (lambda la: la.get_access_log_subscription(accessLogSubscriptionIdentifier=UNKNOWN["als"]),
     "ACCESS_LOG_SUBSCRIPTION", UNKNOWN["als"]),
    (lambda la: la.get_auth_policy(resourceIdentifier=UNKNOWN["svc"]), "SERVICE", UNKNOWN["svc"]),
    (lambda la: la.get_auth_policy(resourceIdentifier=UNKNOWN["sn"]), "SERVICE_NETWORK", UNKNOWN["sn"]),
    (lambda la: la.list_listeners(serviceIdentifier=UNKNOWN["svc"]), "SERVICE", UNKNOWN["svc"]),
    (lambda la: la.list_targets(targetGroupIdentifier=UNKNOWN["tg"]), "TARGET_GROUP", UNKNOWN["tg"]),
    (lambda la: la.delete_service(serviceIdentifier=UNKNOWN["svc"]), "SERVICE", UNKNOWN["svc"]),
    (lambda la: la.delete_target_group(targetGroupIdentifier=UNKNOWN["tg"]), "TARGET_GROUP", UNKNOWN["tg"]),
    (lambda la: la.delete_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=UNKNOWN["snva"]),
     "SERVICE_NETWORK_VPC_ASSOCIATION", UNKNOWN["snva"]),
    (lambda la: la.delete_service_network_service_association(
        serviceNetworkServiceAssociationIdentifier=UNKNOWN["snsa"]),
     "SERVICE_NETWORK_SERVICE_ASSOCIATION", UNKNOWN["snsa"]),
    (lambda la: la.delete_access_log_subscription(accessLogSubscriptionIdentifier=UNKNOWN["als"]),
     "ACCESS_LOG_SUBSCRIPTION", UNKNOWN["als"]),
    (lambda la: la.update_access_log_subscription(accessLogSubscriptionIdentifier=UNKNOWN["als"],
                                                  destinationArn=f"arn:aws:s3:::{uname('b')}"),
     "ACCESS_LOG_SUBSCRIPTION", UNKNOWN["als"]),
]


NOT_FOUND_IDS = [
    "GetServiceNetwork", "GetService", "GetTargetGroup", "GetListener", "GetRule", "GetServiceNetworkVpcAssociation",
    "GetServiceNetworkServiceAssociation", "GetAccessLogSubscription", "GetAuthPolicy-service",
    "GetAuthPolicy-sn", "ListListeners", "ListTargets", "DeleteService", "DeleteTargetGroup",
    "DeleteServiceNetworkVpcAssociation", "DeleteServiceNetworkServiceAssociation", "DeleteAccessLogSubscription",
    "UpdateAccessLogSubscription",
]


@pytest.mark.parametrize("call,rtype,rid", NOT_FOUND_CALLS, ids=NOT_FOUND_IDS)
def test_unknown_id_is_not_found(lattice, call, rtype, rid):
    with raises(lattice, "ResourceNotFoundException", resourceType=rtype, resourceId=rid):
        call(lattice)


@pytest.mark.parametrize("call", ids=["uppercase", "sn-in-service-slot", "bang", "svc-in-sn-slot"], argvalues=[
    lambda la: la.get_service(serviceIdentifier="svc-0123456789ABCDEF0"),
    lambda la: la.get_service(serviceIdentifier="sn-0123456789abcdef0xyz"),
    lambda la: la.get_target_group(targetGroupIdentifier="tg-0123456789abcdef!"),
    lambda la: la.get_service_network(serviceNetworkIdentifier="svc-0123456789abcdef0"),
])
def test_malformed_identifier_is_validation(lattice, call):
    with raises(lattice, "ValidationException"):
        call(lattice)


def test_arn_of_wrong_type_is_validation(lattice, svc):
    with raises(lattice, "ValidationException"):
        lattice.get_service_network(serviceNetworkIdentifier=svc["arn"])


def test_arn_of_other_account_is_not_found(lattice, svc):
    foreign = svc["arn"].replace(f":{ACCOUNT}:", ":111111111111:")
    assert foreign != svc["arn"]
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE"):
        lattice.get_service(serviceIdentifier=foreign)


def test_arn_of_other_region_is_not_found(lattice, svc):
    foreign = svc["arn"].replace(":us-east-1:", f":{OTHER_REGION}:")
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE"):
        lattice.get_service(serviceIdentifier=foreign)


# ---------------------------------------------------------------------------------------------
# ARN-form identifiers for every Get
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def graph(res):
    vpc = res.vpc()
    sn = res.sn()
    svc = res.service()
    tg = res.tg(vpc=vpc)
    lst = res.listener(svc["id"], tg_id=tg["id"])
    rule = res.rule(svc["id"], lst["id"], 10, tg_id=tg["id"])
    snva = res.snva(sn["id"], vpc)
    snsa = res.snsa(sn["id"], svc["id"])
    als = res.als(svc["id"])
    return dict(vpc=vpc, sn=sn, svc=svc, tg=tg, lst=lst, rule=rule, snva=snva, snsa=snsa, als=als)


def test_every_get_accepts_arns(lattice, graph):
    g = graph
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "vpc-lattice-svcs:Invoke", "Resource": "*"}]})
    lattice.put_auth_policy(resourceIdentifier=g["svc"]["arn"], policy=policy)
    lattice.put_auth_policy(resourceIdentifier=g["sn"]["arn"], policy=policy)
    checks = {
        "GetServiceNetwork": lambda: lattice.get_service_network(serviceNetworkIdentifier=g["sn"]["arn"])["id"]
        == g["sn"]["id"],
        "GetService": lambda: lattice.get_service(serviceIdentifier=g["svc"]["arn"])["id"] == g["svc"]["id"],
        "GetTargetGroup": lambda: lattice.get_target_group(targetGroupIdentifier=g["tg"]["arn"])["id"]
        == g["tg"]["id"],
        "GetListener": lambda: lattice.get_listener(serviceIdentifier=g["svc"]["arn"],
                                                    listenerIdentifier=g["lst"]["arn"])["id"] == g["lst"]["id"],
        "GetListener(mixed)": lambda: lattice.get_listener(serviceIdentifier=g["svc"]["id"],
                                                           listenerIdentifier=g["lst"]["arn"])["id"]
        == g["lst"]["id"],
        "GetRule": lambda: lattice.get_rule(serviceIdentifier=g["svc"]["arn"], listenerIdentifier=g["lst"]["arn"],
                                            ruleIdentifier=g["rule"]["arn"])["id"] == g["rule"]["id"],
        "GetServiceNetworkVpcAssociation": lambda: lattice.get_service_network_vpc_association(
            serviceNetworkVpcAssociationIdentifier=g["snva"]["arn"])["id"] == g["snva"]["id"],
        "GetServiceNetworkServiceAssociation": lambda: lattice.get_service_network_service_association(
            serviceNetworkServiceAssociationIdentifier=g["snsa"]["arn"])["id"] == g["snsa"]["id"],
        "GetAccessLogSubscription": lambda: lattice.get_access_log_subscription(
            accessLogSubscriptionIdentifier=g["als"]["arn"])["id"] == g["als"]["id"],
        "GetAuthPolicy(service)": lambda: bool(lattice.get_auth_policy(resourceIdentifier=g["svc"]["arn"])["policy"]),
        "GetAuthPolicy(sn)": lambda: bool(lattice.get_auth_policy(resourceIdentifier=g["sn"]["arn"])["policy"]),
        "ListTagsForResource": lambda: lattice.list_tags_for_resource(resourceArn=g["rule"]["arn"])["tags"] == {},
        "ListListeners": lambda: [i["id"] for i in lattice.list_listeners(serviceIdentifier=g["svc"]["arn"])["items"]]
        == [g["lst"]["id"]],
        "ListTargets": lambda: lattice.list_targets(targetGroupIdentifier=g["tg"]["arn"])["items"] == [],
    }
    failures = [name for name, check in checks.items() if not check()]
    assert not failures, f"these operations did not resolve ARN identifiers: {failures}"


def test_arn_path_segment_is_percent_encoded_on_the_wire(endpoint, svc):
    """botocore sends an ARN as ONE percent-encoded path segment; check the same raw request."""
    path = "/services/" + urllib.parse.quote(svc["arn"], safe="")
    r = raw_request(endpoint, "GET", path)
    assert r.status == 200, r
    assert r.json()["id"] == svc["id"]


# ---------------------------------------------------------------------------------------------
# Unknown operations and unimplemented (P2) operations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ids=["ListResourceGateways", "ListResourceConfigurations",
                                      "ListDomainVerifications", "GetResourceGateway"], argvalues=[
    lambda la: la.list_resource_gateways(),
    lambda la: la.list_resource_configurations(),
    lambda la: la.list_domain_verifications(),
    lambda la: la.get_resource_gateway(resourceGatewayIdentifier="rgw-0123456789abcdef0"),
])
def test_p2_operations_are_unknown_operation(lattice, call):
    with raises(lattice, "ValidationException", 400, reason="unknownOperation"):
        call(lattice)


@pytest.mark.parametrize("method,path", [
    ("GET", "/no-such-collection"),
    ("POST", "/services/svc-0123456789abcdef0/frobnicate"),
    ("PUT", "/services"),
    ("DELETE", "/servicenetworks"),
])
def test_unknown_route_is_unknown_operation(endpoint, method, path):
    body = b"{}" if method in ("POST", "PUT") else None
    assert_raw_validation(raw_request(endpoint, method, path, body=body), reason="unknownOperation")


def test_error_response_members_via_boto(lattice):
    try:
        lattice.get_service(serviceIdentifier=UNKNOWN["svc"])
    except lattice.exceptions.ResourceNotFoundException as e:
        resp = check_error(e, "ResourceNotFoundException", 404, resourceType="SERVICE", resourceId=UNKNOWN["svc"])
        assert resp["ResponseMetadata"].get("RequestId"), "x-amzn-RequestId reaches ResponseMetadata.RequestId"
    else:
        raise AssertionError("GetService on an unknown id did not fail")
