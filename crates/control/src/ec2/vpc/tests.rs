//! Tests of CreateVpc, DescribeVpcs and DeleteVpc.

use crate::ec2::testing::{between, bump, code, group, subnet, vpc};
use crate::test_util::{app, app_and_store, ec2};
use trellis_store::StoreExt;

#[tokio::test]
async fn create_describe_delete() {
    let (app, _dir) = app();
    let params = [
        ("Action", "CreateVpc"),
        ("CidrBlock", "10.0.0.1/16"),
        ("TagSpecification.1.ResourceType", "vpc"),
        ("TagSpecification.1.Tag.1.Key", "Name"),
        ("TagSpecification.1.Tag.1.Value", "<main>"),
    ];
    let (status, body) = ec2(&app, &params).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(
            r#"<?xml version="1.0" encoding="UTF-8"?><CreateVpcResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>"#
        ),
        "{body}"
    );
    let id = between(&body, "<vpcId>", "</vpcId>").to_owned();
    assert_eq!(id.len(), 21, "{id}");
    assert!(body.contains("<vpc><vpcId>"), "{body}");
    assert!(body.contains("<state>pending</state><cidrBlock>10.0.0.0/16</cidrBlock>"), "{body}");
    assert!(body.contains("<cidrBlockState><state>associated</state></cidrBlockState>"), "{body}");
    assert!(body.contains(&format!("<associationId>vpc-cidr-assoc-{}</associationId>", &id[4..])), "{body}");
    assert!(body.contains("<instanceTenancy>default</instanceTenancy><isDefault>false</isDefault>"), "{body}");
    assert!(body.contains("<ownerId>000000000000</ownerId>"), "{body}");
    assert!(body.contains("<tagSet><item><key>Name</key><value>&lt;main&gt;</value></item></tagSet>"), "{body}");
    assert!(body.ends_with("</vpc></CreateVpcResponse>"), "{body}");

    let (status, body) = ec2(&app, &[("Action", "DescribeVpcs")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<vpcSet><item><vpcId>"), "{body}");
    assert!(body.contains("<state>available</state>"), "{body}");
    assert!(!body.contains("<nextToken>"), "{body}");

    // The VPC came with its default security group.
    let (_, body) =
        ec2(&app, &[("Action", "DescribeSecurityGroups"), ("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &id)])
            .await;
    assert!(
        body.contains("<groupName>default</groupName><groupDescription>default VPC security group</groupDescription>"),
        "{body}"
    );

    let (status, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<DeleteVpcResponse") && body.contains("<return>true</return>"), "{body}");
    let (status, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("VpcId.1", &id)]).await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "InvalidVpcID.NotFound");
    assert!(body.contains(&format!("The vpc ID &apos;{id}&apos; does not exist")), "{body}");
    let (_, body) = ec2(&app, &[("Action", "DescribeSecurityGroups")]).await;
    assert!(!body.contains("<item>"), "the default group went with the VPC: {body}");
    let (_, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!(code(&body), "InvalidVpcID.NotFound");
}

#[tokio::test]
async fn create_errors() {
    let (app, _dir) = app();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "MissingParameter"),
        (&[("CidrBlock", "10.0.0.0/8")], "InvalidVpc.Range"),
        (&[("CidrBlock", "10.0.0.0/29")], "InvalidVpc.Range"),
        (&[("CidrBlock", "10.0.0.0/33")], "InvalidParameterValue"),
        (&[("CidrBlock", "banana")], "InvalidParameterValue"),
        (&[("CidrBlock", "10.0.0.0/16"), ("InstanceTenancy", "shared")], "InvalidParameterValue"),
        (
            &[
                ("CidrBlock", "10.0.0.0/16"),
                ("TagSpecification.1.ResourceType", "subnet"),
                ("TagSpecification.1.Tag.1.Key", "a"),
            ],
            "InvalidParameterValue",
        ),
        (
            &[
                ("CidrBlock", "10.0.0.0/16"),
                ("TagSpecification.1.ResourceType", "vpc"),
                ("TagSpecification.1.Tag.1.Key", "aws:x"),
            ],
            "InvalidParameterValue",
        ),
        (&[("CidrBlock", "10.0.0.0/16"), ("AmazonProvidedIpv6CidrBlock", "true")], "UnsupportedOperation"),
        (&[("CidrBlock", "10.0.0.0/16"), ("DryRun", "true")], "DryRunOperation"),
    ];
    for (params, expected) in cases {
        let mut all = vec![("Action", "CreateVpc")];
        all.extend_from_slice(params);
        let (status, body) = ec2(&app, &all).await;
        assert_eq!(code(&body), *expected, "{params:?}: {body}");
        let want = if *expected == "DryRunOperation" { 412 } else { 400 };
        assert_eq!(status, want, "{params:?}");
    }
    let (_, body) = ec2(&app, &[("Action", "DescribeVpcs")]).await;
    assert!(!body.contains("<item>"), "nothing was created: {body}");
    // Overlapping VPCs are allowed; dedicated tenancy is kept.
    vpc(&app, "10.0.0.0/16").await;
    let (status, body) =
        ec2(&app, &[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/24"), ("InstanceTenancy", "dedicated")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<instanceTenancy>dedicated</instanceTenancy>"), "{body}");
}

#[tokio::test]
async fn describe_ids_filters_and_pages() {
    let (app, _dir) = app();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(vpc(&app, &format!("10.{i}.0.0/16")).await);
    }
    let (status, body) = ec2(
        &app,
        &[("Action", "CreateTags"), ("ResourceId.1", &ids[2]), ("Tag.1.Key", "team"), ("Tag.1.Value", "blue")],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("VpcId.1", &ids[0]), ("VpcId.2", &ids[1])]).await;
    assert_eq!(body.matches("<item><vpcId>").count(), 2, "{body}");
    let filtered = |name: &'static str, value: &'static str| {
        let app = app.clone();
        async move {
            let (status, body) =
                ec2(&app, &[("Action", "DescribeVpcs"), ("Filter.1.Name", name), ("Filter.1.Value.1", value)]).await;
            assert_eq!(status, 200, "{body}");
            body.matches("<item><vpcId>").count()
        }
    };
    assert_eq!(filtered("cidr", "10.3.0.0/16").await, 1);
    assert_eq!(filtered("cidr-block-association.cidr-block", "10.?.0.0/16").await, 7);
    assert_eq!(filtered("cidr-block", "10.1*").await, 1);
    assert_eq!(filtered("tag:team", "bl*").await, 1);
    assert_eq!(filtered("tag:team", "red").await, 0);
    assert_eq!(filtered("tag-key", "team").await, 1);
    assert_eq!(filtered("tag-value", "blue").await, 1);
    assert_eq!(filtered("state", "available").await, 7);
    assert_eq!(filtered("is-default", "true").await, 0);
    // Two filters: both must hold; two values: either may.
    let (_, body) = ec2(
        &app,
        &[
            ("Action", "DescribeVpcs"),
            ("Filter.1.Name", "cidr"),
            ("Filter.1.Value.1", "10.2.0.0/16"),
            ("Filter.1.Value.2", "10.4.0.0/16"),
            ("Filter.2.Name", "vpc-id"),
            ("Filter.2.Value.1", &ids[2]),
        ],
    )
    .await;
    assert_eq!(body.matches("<item><vpcId>").count(), 1, "{body}");
    let (status, body) =
        ec2(&app, &[("Action", "DescribeVpcs"), ("Filter.1.Name", "colour"), ("Filter.1.Value.1", "x")]).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "InvalidParameterValue"));

    // Pages of 5 then 2; every VPC exactly once.
    let (_, first) = ec2(&app, &[("Action", "DescribeVpcs"), ("MaxResults", "5")]).await;
    assert_eq!(first.matches("<item><vpcId>").count(), 5, "{first}");
    let token = between(&first, "<nextToken>", "</nextToken>").to_owned();
    assert!(!token.is_empty(), "{first}");
    let (_, second) = ec2(&app, &[("Action", "DescribeVpcs"), ("MaxResults", "5"), ("NextToken", &token)]).await;
    assert_eq!(second.matches("<item><vpcId>").count(), 2, "{second}");
    assert!(!second.contains("<nextToken>"), "{second}");
    for id in &ids {
        assert_eq!(first.matches(id.as_str()).count() + second.matches(id.as_str()).count(), 1, "{id}");
    }
    let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("MaxResults", "4")]).await;
    assert_eq!(code(&body), "InvalidParameterValue");
    let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("NextToken", "nope")]).await;
    assert_eq!(code(&body), "InvalidPaginationToken");
    let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("VpcId.1", "vpc-nope")]).await;
    assert_eq!(code(&body), "InvalidVpcID.Malformed");
    let (_, body) =
        ec2(&app, &[("Action", "DescribeVpcs"), ("VpcId.1", &ids[0]), ("VpcId.2", "vpc-0123456789abcdef0")]).await;
    assert_eq!(code(&body), "InvalidVpcID.NotFound");
}

#[tokio::test]
async fn delete_guards() {
    let (app, _dir) = app();
    let id = vpc(&app, "10.0.0.0/16").await;
    let (_, body) = ec2(&app, &[("Action", "DeleteVpc")]).await;
    assert_eq!(code(&body), "MissingParameter");
    let (_, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", "subnet-0123456789abcdef0")]).await;
    assert_eq!(code(&body), "InvalidVpcID.Malformed");

    let sn = subnet(&app, &id, "10.0.1.0/24").await;
    let (status, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "DependencyViolation"));
    assert!(body.contains("has dependencies and cannot be deleted"), "{body}");
    ec2(&app, &[("Action", "DeleteSubnet"), ("SubnetId", &sn)]).await;

    let sg = group(&app, &id, "web").await;
    let (_, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!(code(&body), "DependencyViolation");
    ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", &sg)]).await;

    let (_, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id), ("DryRun", "true")]).await;
    assert_eq!(code(&body), "DryRunOperation");
    let (status, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn delete_refused_while_associated_with_a_service_network() {
    let (app, store, _dir) = app_and_store();
    let id = vpc(&app, "10.0.0.0/16").await;
    // What the association handlers write: a count of the VPC's service-network associations.
    bump(store.as_ref(), crate::keys::rel::VPC_SNVA, &id, 1).await;
    let (_, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!(code(&body), "DependencyViolation");
    bump(store.as_ref(), crate::keys::rel::VPC_SNVA, &id, -1).await;
    let (status, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn describe_dry_run() {
    let (app, _dir) = app();
    for action in ["DescribeVpcs", "DescribeSubnets", "DescribeSecurityGroups"] {
        let (status, body) = ec2(&app, &[("Action", action), ("DryRun", "true")]).await;
        assert_eq!((status.as_u16(), code(&body)), (412, "DryRunOperation"), "{action}");
    }
    let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("DryRun", "maybe")]).await;
    assert_eq!(code(&body), "InvalidParameterValue");
}

#[tokio::test]
async fn a_deleted_vpc_leaves_nothing_of_its_address_allocator() {
    let (app, store, _dir) = app_and_store();
    let id = vpc(&app, "10.0.0.0/16").await;
    let range = ("10.0.1.4".parse().unwrap(), "10.0.1.254".parse().unwrap());
    let ip = crate::ipam::claim(store.as_ref(), &id, range, "i-1").await.unwrap().unwrap();
    crate::ipam::release(store.as_ref(), &id, ip).await.unwrap();
    let prefix = crate::ipam::prefix(&id);
    assert!(!store.list_prefix(&prefix, None, 0).await.unwrap().kvs.is_empty(), "the cursor is kept");
    let (status, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &id)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(store.list_prefix(&prefix, None, 0).await.unwrap().kvs.is_empty());
}
