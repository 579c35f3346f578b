"""The EC2 network subset: VPCs, subnets, security groups, tags (EC2 query protocol)."""

import pytest

from support import ACCOUNT, REGION, SETTLE_SECONDS, assert_id, raises, uname, wait_for


def tag_list(d):
    return {t["Key"]: t["Value"] for t in d.get("Tags", [])}


def describe_vpc(ec2, vpc_id):
    vpcs = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    assert [v["VpcId"] for v in vpcs] == [vpc_id]
    return vpcs[0]


# ---------------------------------------------------------------------------------------------
# VPCs
# ---------------------------------------------------------------------------------------------


def test_create_vpc(ec2, res):
    name = uname("vpc")
    r = ec2.create_vpc(CidrBlock="10.0.0.0/16",
                       TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": name}]}])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    vpc = r["Vpc"]
    res.track("vpc", vpc["VpcId"])
    assert_id(vpc["VpcId"], "vpc", "VPC")
    assert vpc["CidrBlock"] == "10.0.0.0/16"
    assert vpc["State"] in ("pending", "available")
    assert vpc["OwnerId"] == ACCOUNT
    assert vpc.get("IsDefault") is False


def test_vpc_becomes_available(ec2, res):
    vpc_id = res.vpc()
    wait_for(lambda: describe_vpc(ec2, vpc_id)["State"] == "available", SETTLE_SECONDS,
             message="VPC state 'available'")


def test_describe_vpcs_by_id_and_filters(ec2, res):
    name = uname("vpc")
    a = res.vpc(cidr="10.20.0.0/16", tags={"Name": name, "team": "cf"})
    b = res.vpc(cidr="10.21.0.0/16")
    v = describe_vpc(ec2, a)
    assert v["CidrBlock"] == "10.20.0.0/16"
    assert tag_list(v) == {"Name": name, "team": "cf"}
    ids = lambda **kw: sorted(x["VpcId"] for x in ec2.describe_vpcs(**kw)["Vpcs"])
    assert ids(VpcIds=[a, b]) == sorted([a, b])
    assert ids(Filters=[{"Name": "vpc-id", "Values": [a]}]) == [a]
    assert ids(Filters=[{"Name": "tag:Name", "Values": [name]}]) == [a]
    assert a in ids(Filters=[{"Name": "tag-key", "Values": ["team"]}])
    assert b not in ids(Filters=[{"Name": "tag-key", "Values": ["team"]}])
    assert ids(Filters=[{"Name": "vpc-id", "Values": [a, b]}, {"Name": "tag:team", "Values": ["cf"]}]) == [a], \
        "several filters AND together"
    assert ids(Filters=[{"Name": "tag:Name", "Values": ["no-such-name-" + name]}]) == [], \
        "a filter that matches nothing returns an empty list, not an error"
    assert a in ids()


def test_describe_unknown_vpc(ec2):
    with raises(ec2, "InvalidVpcID.NotFound", 400):
        ec2.describe_vpcs(VpcIds=["vpc-0123456789abcdef0"])


def test_delete_vpc(ec2, res):
    vpc_id = res.vpc()
    r = ec2.delete_vpc(VpcId=vpc_id)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    with raises(ec2, "InvalidVpcID.NotFound", 400):
        ec2.describe_vpcs(VpcIds=[vpc_id])
    with raises(ec2, "InvalidVpcID.NotFound", 400):
        ec2.delete_vpc(VpcId=vpc_id)


@pytest.mark.parametrize("cidr", ["garbage", "10.0.0.0/33", "300.0.0.0/16"])
def test_create_vpc_bad_cidr(ec2, cidr):
    with raises(ec2, "InvalidParameterValue", 400):
        ec2.create_vpc(CidrBlock=cidr)


def test_create_vpc_missing_cidr(ec2):
    with raises(ec2, "MissingParameter", 400):
        ec2.create_vpc()


def test_delete_vpc_with_subnet_is_dependency_violation(ec2, res):
    vpc_id = res.vpc()
    res.subnet(vpc_id, "10.0.1.0/24")
    with raises(ec2, "DependencyViolation", 400):
        ec2.delete_vpc(VpcId=vpc_id)
    describe_vpc(ec2, vpc_id)


# ---------------------------------------------------------------------------------------------
# Subnets
# ---------------------------------------------------------------------------------------------


def test_create_and_describe_subnet(ec2, res):
    vpc_id = res.vpc()
    r = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24")
    sub = r["Subnet"]
    res.track("subnet", sub["SubnetId"])
    assert_id(sub["SubnetId"], "subnet", "subnet")
    assert sub["VpcId"] == vpc_id
    assert sub["CidrBlock"] == "10.0.1.0/24"
    assert sub["State"] in ("pending", "available")
    if "AvailabilityZone" in sub:
        assert sub["AvailabilityZone"].startswith(REGION)
    if "AvailableIpAddressCount" in sub:
        assert sub["AvailableIpAddressCount"] == 251, "a /24 has 256 - 5 reserved addresses"
    d = ec2.describe_subnets(SubnetIds=[sub["SubnetId"]])["Subnets"]
    assert [s["SubnetId"] for s in d] == [sub["SubnetId"]]
    assert d[0]["VpcId"] == vpc_id and d[0]["CidrBlock"] == "10.0.1.0/24"
    by_vpc = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert [s["SubnetId"] for s in by_vpc] == [sub["SubnetId"]]


def test_subnet_tags_and_filter(ec2, res):
    vpc_id = res.vpc()
    name = uname("sub")
    r = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.2.0/24", TagSpecifications=[
        {"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": name}]}])
    sid = r["Subnet"]["SubnetId"]
    res.track("subnet", sid)
    found = ec2.describe_subnets(Filters=[{"Name": "tag:Name", "Values": [name]}])["Subnets"]
    assert [s["SubnetId"] for s in found] == [sid]


def test_delete_subnet(ec2, res):
    vpc_id = res.vpc()
    sid = res.subnet(vpc_id, "10.0.3.0/24")
    ec2.delete_subnet(SubnetId=sid)
    with raises(ec2, "InvalidSubnetID.NotFound", 400):
        ec2.describe_subnets(SubnetIds=[sid])
    ec2.delete_vpc(VpcId=vpc_id)  # no longer a dependency


@pytest.mark.parametrize("cidr", ["192.168.0.0/24", "10.1.0.0/24", "10.0.0.0/29", "10.0.0.0/15"])
def test_subnet_outside_vpc_or_bad_size_is_range_error(ec2, res, cidr):
    vpc_id = res.vpc(cidr="10.0.0.0/16")
    with raises(ec2, "InvalidSubnet.Range", 400):
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)


@pytest.mark.parametrize("second", ["10.0.1.0/24", "10.0.1.128/25", "10.0.0.0/23"])
def test_overlapping_subnet_conflicts(ec2, res, second):
    vpc_id = res.vpc()
    res.subnet(vpc_id, "10.0.1.0/24")
    with raises(ec2, "InvalidSubnet.Conflict", 400):
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=second)


def test_subnet_bad_cidr(ec2, res):
    vpc_id = res.vpc()
    with raises(ec2, "InvalidParameterValue", 400):
        ec2.create_subnet(VpcId=vpc_id, CidrBlock="not-a-cidr")


def test_subnet_unknown_vpc(ec2):
    with raises(ec2, "InvalidVpcID.NotFound", 400):
        ec2.create_subnet(VpcId="vpc-0123456789abcdef0", CidrBlock="10.0.1.0/24")


def test_subnet_missing_cidr(ec2, res):
    vpc_id = res.vpc()
    with raises(ec2, "MissingParameter", 400):
        ec2.create_subnet(VpcId=vpc_id)


# ---------------------------------------------------------------------------------------------
# Security groups
# ---------------------------------------------------------------------------------------------


def test_create_and_describe_security_group(ec2, res):
    vpc_id = res.vpc()
    name = uname("sg")
    r = ec2.create_security_group(GroupName=name, Description="conformance sg", VpcId=vpc_id)
    gid = r["GroupId"]
    res.track("sg", gid)
    assert_id(gid, "sg", "security group")
    g = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert [x["GroupId"] for x in g] == [gid]
    assert g[0]["GroupName"] == name
    assert g[0]["Description"] == "conformance sg"
    assert g[0]["VpcId"] == vpc_id
    assert g[0]["OwnerId"] == ACCOUNT
    by_filter = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                      {"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    assert [x["GroupId"] for x in by_filter] == [gid]


def test_duplicate_security_group_name_in_vpc(ec2, res):
    vpc_id = res.vpc()
    name = uname("sg")
    res.sg(vpc_id, name=name)
    with raises(ec2, "InvalidGroup.Duplicate", 400):
        ec2.create_security_group(GroupName=name, Description="dup", VpcId=vpc_id)
    other = res.vpc()
    res.sg(other, name=name)  # the same name in another VPC is fine


def test_delete_security_group(ec2, res):
    vpc_id = res.vpc()
    gid = res.sg(vpc_id)
    ec2.delete_security_group(GroupId=gid)
    with raises(ec2, "InvalidGroup.NotFound", 400):
        ec2.describe_security_groups(GroupIds=[gid])


def test_security_group_unknown_vpc(ec2):
    with raises(ec2, "InvalidVpcID.NotFound", 400):
        ec2.create_security_group(GroupName=uname("sg"), Description="x", VpcId="vpc-0123456789abcdef0")


def test_security_group_missing_description(ec2, res):
    vpc_id = res.vpc()
    from support import make_client
    nv = make_client("ec2", ec2.meta.endpoint_url, parameter_validation=False)
    with raises(nv, "MissingParameter", 400):
        nv.create_security_group(GroupName=uname("sg"), VpcId=vpc_id)


# ---------------------------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------------------------


def test_create_and_delete_tags(ec2, res):
    vpc_id = res.vpc()
    sid = res.subnet(vpc_id, "10.0.4.0/24")
    gid = res.sg(vpc_id)
    r = ec2.create_tags(Resources=[vpc_id, sid, gid], Tags=[{"Key": "env", "Value": "dev"}, {"Key": "k", "Value": "v"}])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert tag_list(describe_vpc(ec2, vpc_id)) == {"env": "dev", "k": "v"}
    assert tag_list(ec2.describe_subnets(SubnetIds=[sid])["Subnets"][0]) == {"env": "dev", "k": "v"}
    assert tag_list(ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]) == {"env": "dev", "k": "v"}
    # overwrite
    ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "env", "Value": "prod"}])
    assert tag_list(describe_vpc(ec2, vpc_id))["env"] == "prod"
    # delete by key only, and by key+value (a non-matching value deletes nothing)
    ec2.delete_tags(Resources=[vpc_id], Tags=[{"Key": "k"}])
    assert tag_list(describe_vpc(ec2, vpc_id)) == {"env": "prod"}
    ec2.delete_tags(Resources=[vpc_id], Tags=[{"Key": "env", "Value": "dev"}])
    assert tag_list(describe_vpc(ec2, vpc_id)) == {"env": "prod"}
    ec2.delete_tags(Resources=[vpc_id], Tags=[{"Key": "env", "Value": "prod"}])
    assert tag_list(describe_vpc(ec2, vpc_id)) == {}
    found = ec2.describe_vpcs(Filters=[{"Name": "tag:env", "Values": ["prod"]}])["Vpcs"]
    assert vpc_id not in [v["VpcId"] for v in found]


def test_create_tags_unknown_resource(ec2):
    with raises(ec2, "InvalidVpcID.NotFound", 400):
        ec2.create_tags(Resources=["vpc-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])


def test_create_tags_missing_tags(ec2, res):
    vpc_id = res.vpc()
    from support import make_client
    nv = make_client("ec2", ec2.meta.endpoint_url, parameter_validation=False)
    with raises(nv, "MissingParameter", 400):
        nv.create_tags(Resources=[vpc_id])
