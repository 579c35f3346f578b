"""The API's browser-forgery defences (DESIGN.md "Security baseline"), unsigned requests, and
per-region resource isolation."""

import json
import urllib.parse

import pytest

from support import OTHER_REGION, REGION, find_item, list_all, raw_request, raises, service_dns_name, uname


def netloc(endpoint):
    return urllib.parse.urlsplit(endpoint).netloc


def port_of(endpoint):
    return urllib.parse.urlsplit(endpoint).port


# ---------------------------------------------------------------------------------------------
# Cross-site and DNS-rebinding refusals
# ---------------------------------------------------------------------------------------------


def test_baseline_unsigned_raw_get_works(endpoint):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False)
    assert r.status == 200, r


@pytest.mark.parametrize("sign", [False, True])
def test_foreign_origin_is_refused(endpoint, sign):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=sign, headers={"Origin": "http://evil.example"})
    assert r.status == 403, f"a request with a foreign Origin must be refused with 403: {r}"


def test_foreign_origin_cannot_create(endpoint, lattice):
    name = uname("evil")
    r = raw_request(endpoint, "POST", "/servicenetworks", body=json.dumps({"name": name}), sign=False,
                    headers={"Origin": "http://evil.example"})
    assert r.status == 403, r
    assert not [i for i in list_all(lattice, "list_service_networks") if i["name"] == name], \
        "a refused cross-origin POST must not create anything"


@pytest.mark.parametrize("origin", ["null", "https://127.0.0.1.evil.example", "http://localhost.evil.example"])
def test_other_foreign_origins_are_refused(endpoint, origin):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False, headers={"Origin": origin})
    assert r.status == 403, f"Origin {origin!r} must be refused: {r}"


def test_own_origin_is_allowed(endpoint):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False, headers={"Origin": f"http://{netloc(endpoint)}"})
    assert r.status == 200, r


def test_localhost_origin_with_port_is_allowed(endpoint):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False,
                    headers={"Origin": f"http://localhost:{port_of(endpoint)}"})
    assert r.status == 200, r


def test_cross_site_fetch_is_refused(endpoint):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status == 403, f"Sec-Fetch-Site: cross-site must be refused with 403: {r}"


def test_cross_site_post_is_refused(endpoint):
    r = raw_request(endpoint, "POST", "/services", body=json.dumps({"name": uname("evil")}), sign=True,
                    headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status == 403, r


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_same_origin_fetch_is_allowed(endpoint, site):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False, headers={"Sec-Fetch-Site": site})
    assert r.status == 200, f"Sec-Fetch-Site: {site} is not cross-site and must be served: {r}"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "attacker.localhost.example"])
def test_foreign_host_header_is_refused(endpoint, host):
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False, host=host)
    assert r.status in (400, 403, 421), f"Host {host!r} (DNS rebinding) must be refused with 4xx: {r}"
    assert r.status != 200


def test_foreign_host_cannot_create(endpoint, lattice):
    name = uname("rebind")
    raw_request(endpoint, "POST", "/servicenetworks", body=json.dumps({"name": name}), sign=False,
                host="evil.example")
    assert not [i for i in list_all(lattice, "list_service_networks") if i["name"] == name]


@pytest.mark.parametrize("host_fmt", ["{netloc}", "localhost:{port}"])
def test_own_host_names_are_allowed(endpoint, host_fmt):
    host = host_fmt.format(netloc=netloc(endpoint), port=port_of(endpoint))
    r = raw_request(endpoint, "GET", "/servicenetworks", sign=False, host=host)
    assert r.status == 200, f"Host {host!r} is the API's own name and must be served: {r}"


# ---------------------------------------------------------------------------------------------
# Unsigned requests
# ---------------------------------------------------------------------------------------------


def test_unsigned_boto_client_works(lattice_unsigned, lattice, res):
    name = uname("unsigned")
    r = lattice_unsigned.create_service_network(name=name)
    res.track("sn", r["id"])
    assert r["name"] == name
    assert f":{REGION}:" in r["arn"], "unsigned requests act in the default region"
    assert lattice.get_service_network(serviceNetworkIdentifier=r["id"])["name"] == name
    assert find_item(list_all(lattice_unsigned, "list_service_networks"), r["id"]) is not None


def test_unsigned_error_is_still_modelled(lattice_unsigned):
    with raises(lattice_unsigned, "ResourceNotFoundException", resourceType="SERVICE"):
        lattice_unsigned.get_service(serviceIdentifier="svc-0123456789abcdef0")


# ---------------------------------------------------------------------------------------------
# Regions
# ---------------------------------------------------------------------------------------------


def test_resources_live_per_region(lattice, lattice_other_region, res, res_other_region):
    east = res.sn()
    west = res_other_region.sn()
    assert f":{REGION}:" in east["arn"]
    assert west["arn"].startswith(f"arn:aws:vpc-lattice:{OTHER_REGION}:"), west["arn"]
    east_ids = {i["id"] for i in list_all(lattice, "list_service_networks")}
    west_ids = {i["id"] for i in list_all(lattice_other_region, "list_service_networks")}
    assert east["id"] in east_ids and east["id"] not in west_ids
    assert west["id"] in west_ids and west["id"] not in east_ids
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK"):
        lattice.get_service_network(serviceNetworkIdentifier=west["id"])
    with raises(lattice, "ResourceNotFoundException"):
        lattice.get_service_network(serviceNetworkIdentifier=west["arn"])
    with raises(lattice_other_region, "ResourceNotFoundException"):
        lattice_other_region.get_service_network(serviceNetworkIdentifier=east["id"])


def test_names_are_unique_per_region_only(res, res_other_region):
    name = uname("sn")
    a = res.sn(name=name)
    b = res_other_region.sn(name=name)
    assert a["id"] != b["id"]


def test_service_dns_name_uses_region(res_other_region):
    s = res_other_region.service()
    assert s["dnsEntry"]["domainName"] == service_dns_name(s["name"], s["id"], region=OTHER_REGION)


def test_vpcs_live_per_region(ec2, ec2_other_region, res_other_region, lattice):
    vpc = res_other_region.vpc()
    with raises(ec2, "InvalidVpcID.NotFound", 400):
        ec2.describe_vpcs(VpcIds=[vpc])
    assert [v["VpcId"] for v in ec2_other_region.describe_vpcs(VpcIds=[vpc])["Vpcs"]] == [vpc]
    # A us-east-1 target group cannot use a eu-west-1 VPC.
    with raises(lattice, "ResourceNotFoundException", resourceType="VPC"):
        lattice.create_target_group(name=uname("tg"), type="IP",
                                    config={"port": 80, "protocol": "HTTP", "vpcIdentifier": vpc})


def test_target_group_in_other_region(lattice, res_other_region):
    vpc = res_other_region.vpc()
    t = res_other_region.tg(vpc=vpc)
    assert t["arn"].startswith(f"arn:aws:vpc-lattice:{OTHER_REGION}:")
    with raises(lattice, "ResourceNotFoundException"):
        lattice.get_target_group(targetGroupIdentifier=t["id"])
