"""Service network <-> VPC (SNVA) and service network <-> service (SNSA) associations."""

from support import (
    ACCOUNT, arn, assert_id, assert_no_none, assert_timestamp, becomes_active, becomes_gone, find_item, list_all,
    raises, strip_meta, uname,
)

# ---------------------------------------------------------------------------------------------
# SN <-> VPC
# ---------------------------------------------------------------------------------------------


def get_snva(lattice, ident):
    return lattice.get_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=ident)


def get_snsa(lattice, ident):
    return lattice.get_service_network_service_association(serviceNetworkServiceAssociationIdentifier=ident)


def test_snva_create_shape(lattice, res, sn, vpc):
    sg = res.sg(vpc)
    r = res.snva(sn["id"], vpc, securityGroupIds=[sg])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200, "CreateServiceNetworkVpcAssociation answers 200"
    assert_id(r["id"], "snva", "SN-VPC association")
    assert r["arn"] == arn(f"servicenetworkvpcassociation/{r['id']}")
    assert r["status"] == "CREATE_IN_PROGRESS"
    assert r["createdBy"] == ACCOUNT
    assert r["securityGroupIds"] == [sg]
    assert_no_none(strip_meta(r))


def test_snva_becomes_active_and_get_shape(lattice, res, sn, vpc):
    r = res.snva(sn["id"], vpc)
    g = becomes_active(lambda: get_snva(lattice, r["id"]), "SN-VPC association")
    assert g["id"] == r["id"] and g["arn"] == r["arn"]
    assert g["serviceNetworkId"] == sn["id"]
    assert g["serviceNetworkName"] == sn["name"]
    assert g["serviceNetworkArn"] == sn["arn"]
    assert g["vpcId"] == vpc
    assert g["createdBy"] == ACCOUNT
    assert_timestamp(g["createdAt"], "createdAt")
    assert "failureCode" not in g and "failureMessage" not in g
    assert_no_none(strip_meta(g))
    assert get_snva(lattice, r["arn"])["id"] == r["id"], "GetServiceNetworkVpcAssociation accepts the ARN"


def test_snva_with_sn_arn(lattice, res, sn, vpc):
    r = res.snva(sn["arn"], vpc)
    assert get_snva(lattice, r["id"])["serviceNetworkId"] == sn["id"]


def test_snva_counts_and_lists(lattice, res, sn, vpc):
    r = res.snva(sn["id"], vpc)
    g = lattice.get_service_network(serviceNetworkIdentifier=sn["id"])
    assert g["numberOfAssociatedVPCs"] == 1
    by_sn = list_all(lattice, "list_service_network_vpc_associations", serviceNetworkIdentifier=sn["id"])
    assert [i["id"] for i in by_sn] == [r["id"]]
    item = by_sn[0]
    assert item["vpcId"] == vpc and item["serviceNetworkId"] == sn["id"] and item["serviceNetworkName"] == sn["name"]
    assert item["arn"] == r["arn"] and item["createdBy"] == ACCOUNT
    assert item["status"] in ("CREATE_IN_PROGRESS", "ACTIVE")
    assert_no_none(by_sn)
    by_vpc = list_all(lattice, "list_service_network_vpc_associations", vpcIdentifier=vpc)
    assert [i["id"] for i in by_vpc] == [r["id"]]


def test_vpc_already_associated_with_other_sn_conflicts(lattice, res, vpc):
    a, b = res.sn(), res.sn()
    res.snva(a["id"], vpc)
    with raises(lattice, "ConflictException"):
        lattice.create_service_network_vpc_association(serviceNetworkIdentifier=b["id"], vpcIdentifier=vpc)


def test_same_pair_twice_conflicts(lattice, res, sn, vpc):
    res.snva(sn["id"], vpc)
    with raises(lattice, "ConflictException"):
        lattice.create_service_network_vpc_association(serviceNetworkIdentifier=sn["id"], vpcIdentifier=vpc)


def test_snva_unknown_vpc(lattice, sn):
    with raises(lattice, "ResourceNotFoundException", resourceType="VPC", resourceId="vpc-0123456789abcdef0"):
        lattice.create_service_network_vpc_association(serviceNetworkIdentifier=sn["id"],
                                                       vpcIdentifier="vpc-0123456789abcdef0")


def test_snva_unknown_sn(lattice, vpc):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK",
                resourceId="sn-0123456789abcdef0"):
        lattice.create_service_network_vpc_association(serviceNetworkIdentifier="sn-0123456789abcdef0",
                                                       vpcIdentifier=vpc)


def test_snva_update_security_groups(lattice, res, sn, vpc):
    sg1, sg2 = res.sg(vpc), res.sg(vpc)
    r = res.snva(sn["id"], vpc, securityGroupIds=[sg1])
    becomes_active(lambda: get_snva(lattice, r["id"]), "SN-VPC association")
    u = lattice.update_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=r["id"],
                                                       securityGroupIds=[sg1, sg2])
    assert u["id"] == r["id"]
    assert sorted(u["securityGroupIds"]) == sorted([sg1, sg2])
    g = becomes_active(lambda: get_snva(lattice, r["id"]), "updated SN-VPC association")
    assert sorted(g["securityGroupIds"]) == sorted([sg1, sg2])


def test_sn_with_vpc_cannot_be_deleted(lattice, res, sn, vpc):
    res.snva(sn["id"], vpc)
    with raises(lattice, "ConflictException", resourceType="SERVICE_NETWORK", resourceId=sn["id"]):
        lattice.delete_service_network(serviceNetworkIdentifier=sn["id"])


def test_snva_delete(lattice, res, sn, vpc):
    r = res.snva(sn["id"], vpc)
    becomes_active(lambda: get_snva(lattice, r["id"]), "SN-VPC association")
    d = lattice.delete_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=r["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert d["id"] == r["id"] and d["arn"] == r["arn"] and d["status"] == "DELETE_IN_PROGRESS"
    becomes_gone(lattice, lambda: get_snva(lattice, r["id"]), "deleted SN-VPC association",
                 resource_type="SERVICE_NETWORK_VPC_ASSOCIATION")
    assert lattice.get_service_network(serviceNetworkIdentifier=sn["id"])["numberOfAssociatedVPCs"] == 0
    # Now the VPC is free for another service network, and this one can be deleted.
    other = res.sn()
    res.snva(other["id"], vpc)
    lattice.delete_service_network(serviceNetworkIdentifier=sn["id"])


def test_snva_get_unknown(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK_VPC_ASSOCIATION",
                resourceId="snva-0123456789abcdef0"):
        get_snva(lattice, "snva-0123456789abcdef0")


# ---------------------------------------------------------------------------------------------
# SN <-> service
# ---------------------------------------------------------------------------------------------


def test_snsa_create_shape(lattice, res, sn, svc):
    r = res.snsa(sn["id"], svc["id"])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200, "CreateServiceNetworkServiceAssociation answers 200"
    assert_id(r["id"], "snsa", "SN-service association")
    assert r["arn"] == arn(f"servicenetworkserviceassociation/{r['id']}")
    assert r["status"] == "CREATE_IN_PROGRESS"
    assert r["createdBy"] == ACCOUNT
    assert r["dnsEntry"]["domainName"] == svc["dnsEntry"]["domainName"]
    assert "customDomainName" not in r
    assert_no_none(strip_meta(r))


def test_snsa_becomes_active_and_get_shape(lattice, res, sn, svc):
    r = res.snsa(sn["id"], svc["id"])
    g = becomes_active(lambda: get_snsa(lattice, r["id"]), "SN-service association")
    assert g["serviceId"] == svc["id"] and g["serviceName"] == svc["name"] and g["serviceArn"] == svc["arn"]
    assert g["serviceNetworkId"] == sn["id"] and g["serviceNetworkName"] == sn["name"]
    assert g["serviceNetworkArn"] == sn["arn"]
    assert g["dnsEntry"]["domainName"] == svc["dnsEntry"]["domainName"]
    assert g["createdBy"] == ACCOUNT
    assert_timestamp(g["createdAt"], "createdAt")
    assert_no_none(strip_meta(g))
    assert get_snsa(lattice, r["arn"])["id"] == r["id"], "GetServiceNetworkServiceAssociation accepts the ARN"


def test_snsa_custom_domain_is_carried(lattice, res, sn):
    domain = f"{uname('api')}.example.internal"
    s = res.service(customDomainName=domain)
    r = res.snsa(sn["id"], s["id"])
    assert r["customDomainName"] == domain


def test_snsa_counts_and_lists(lattice, res, sn, svc):
    r = res.snsa(sn["id"], svc["id"])
    assert lattice.get_service_network(serviceNetworkIdentifier=sn["id"])["numberOfAssociatedServices"] == 1
    by_sn = list_all(lattice, "list_service_network_service_associations", serviceNetworkIdentifier=sn["id"])
    assert [i["id"] for i in by_sn] == [r["id"]]
    item = by_sn[0]
    assert item["serviceId"] == svc["id"] and item["serviceName"] == svc["name"]
    assert item["serviceNetworkId"] == sn["id"] and item["arn"] == r["arn"]
    assert_no_none(by_sn)
    by_svc = list_all(lattice, "list_service_network_service_associations", serviceIdentifier=svc["arn"])
    assert [i["id"] for i in by_svc] == [r["id"]]


def test_service_in_two_networks(lattice, res, svc):
    a, b = res.sn(), res.sn()
    ra = res.snsa(a["id"], svc["id"])
    rb = res.snsa(b["arn"], svc["arn"])
    assert ra["id"] != rb["id"]
    by_svc = list_all(lattice, "list_service_network_service_associations", serviceIdentifier=svc["id"])
    assert sorted(i["id"] for i in by_svc) == sorted([ra["id"], rb["id"]])


def test_snsa_same_pair_twice_conflicts(lattice, res, sn, svc):
    res.snsa(sn["id"], svc["id"])
    with raises(lattice, "ConflictException"):
        lattice.create_service_network_service_association(serviceNetworkIdentifier=sn["id"],
                                                           serviceIdentifier=svc["id"])


def test_snsa_unknown_service(lattice, sn):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE", resourceId="svc-0123456789abcdef0"):
        lattice.create_service_network_service_association(serviceNetworkIdentifier=sn["id"],
                                                           serviceIdentifier="svc-0123456789abcdef0")


def test_snsa_unknown_sn(lattice, svc):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK"):
        lattice.create_service_network_service_association(serviceNetworkIdentifier="sn-0123456789abcdef0",
                                                           serviceIdentifier=svc["id"])


def test_associated_service_cannot_be_deleted(lattice, res, sn, svc):
    res.snsa(sn["id"], svc["id"])
    with raises(lattice, "ConflictException", resourceType="SERVICE", resourceId=svc["id"]):
        lattice.delete_service(serviceIdentifier=svc["id"])


def test_sn_with_service_cannot_be_deleted(lattice, res, sn, svc):
    res.snsa(sn["id"], svc["id"])
    with raises(lattice, "ConflictException", resourceType="SERVICE_NETWORK"):
        lattice.delete_service_network(serviceNetworkIdentifier=sn["id"])


def test_snsa_delete(lattice, res, sn, svc):
    r = res.snsa(sn["id"], svc["id"])
    becomes_active(lambda: get_snsa(lattice, r["id"]), "SN-service association")
    d = lattice.delete_service_network_service_association(serviceNetworkServiceAssociationIdentifier=r["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert d["id"] == r["id"] and d["arn"] == r["arn"] and d["status"] == "DELETE_IN_PROGRESS"
    becomes_gone(lattice, lambda: get_snsa(lattice, r["id"]), "deleted SN-service association",
                 resource_type="SERVICE_NETWORK_SERVICE_ASSOCIATION")
    assert lattice.get_service_network(serviceNetworkIdentifier=sn["id"])["numberOfAssociatedServices"] == 0
    assert find_item(list_all(lattice, "list_service_network_service_associations",
                              serviceNetworkIdentifier=sn["id"]), r["id"]) is None
    # With the association gone the service can be deleted.
    assert lattice.delete_service(serviceIdentifier=svc["id"])["status"] == "DELETE_IN_PROGRESS"


def test_snsa_get_unknown(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="SERVICE_NETWORK_SERVICE_ASSOCIATION",
                resourceId="snsa-0123456789abcdef0"):
        get_snsa(lattice, "snsa-0123456789abcdef0")


def test_security_group_in_use_cannot_be_deleted(lattice, ec2, res, sn, vpc):
    """A security group a VPC association uses is a dependency: EC2 refuses to delete it."""
    first, second = res.sg(vpc), res.sg(vpc)
    r = res.snva(sn["id"], vpc, securityGroupIds=[first])
    with raises(ec2, "DependencyViolation", 400):
        ec2.delete_security_group(GroupId=first)
    lattice.update_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=r["id"],
                                                   securityGroupIds=[second])
    with raises(ec2, "DependencyViolation", 400):
        ec2.delete_security_group(GroupId=second)
    ec2.delete_security_group(GroupId=first)
    lattice.delete_service_network_vpc_association(serviceNetworkVpcAssociationIdentifier=r["id"])
    ec2.delete_security_group(GroupId=second)
