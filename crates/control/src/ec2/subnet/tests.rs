//! Tests of CreateSubnet, DescribeSubnets and DeleteSubnet.

use super::zone_id;
use crate::ec2::rel;
use crate::ec2::testing::{between, bump, code, subnet, vpc};
use crate::test_util::{app, app_and_store, ec2};

#[tokio::test]
async fn create_describe_delete() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    let params = [
        ("Action", "CreateSubnet"),
        ("VpcId", vpc.as_str()),
        ("CidrBlock", "10.0.1.0/24"),
        ("AvailabilityZone", "us-east-1b"),
        ("TagSpecification.1.ResourceType", "subnet"),
        ("TagSpecification.1.Tag.1.Key", "Name"),
        ("TagSpecification.1.Tag.1.Value", "private"),
    ];
    let (status, body) = ec2(&app, &params).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<CreateSubnetResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"), "{body}");
    let id = between(&body, "<subnetId>", "</subnetId>").to_owned();
    assert!(id.starts_with("subnet-0") && id.len() == 24, "{id}");
    assert!(body.contains(&format!("<subnetArn>arn:aws:ec2:us-east-1:000000000000:subnet/{id}</subnetArn>")), "{body}");
    assert!(body.contains("<state>available</state>"), "{body}");
    assert!(body.contains(&format!("<vpcId>{vpc}</vpcId><cidrBlock>10.0.1.0/24</cidrBlock>")), "{body}");
    assert!(body.contains("<availableIpAddressCount>251</availableIpAddressCount>"), "{body}");
    assert!(
        body.contains(
            "<availabilityZone>us-east-1b</availabilityZone><availabilityZoneId>use1-az2</availabilityZoneId>"
        ),
        "{body}"
    );
    assert!(
        body.contains("<defaultForAz>false</defaultForAz><mapPublicIpOnLaunch>false</mapPublicIpOnLaunch>"),
        "{body}"
    );
    assert!(body.contains("<tagSet><item><key>Name</key><value>private</value></item></tagSet>"), "{body}");

    // The zone defaults to the region's first; AvailabilityZoneId works too.
    let (_, body) = ec2(&app, &[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", "10.0.2.0/28")]).await;
    assert!(body.contains("<availabilityZone>us-east-1a</availabilityZone>"), "{body}");
    assert!(body.contains("<availableIpAddressCount>11</availableIpAddressCount>"), "{body}");
    let (_, body) = ec2(
        &app,
        &[
            ("Action", "CreateSubnet"),
            ("VpcId", &vpc),
            ("CidrBlock", "10.0.3.0/24"),
            ("AvailabilityZoneId", "use1-az3"),
        ],
    )
    .await;
    assert!(body.contains("<availabilityZone>us-east-1c</availabilityZone>"), "{body}");

    let (_, body) = ec2(&app, &[("Action", "DescribeSubnets")]).await;
    assert_eq!(body.matches("<item><subnetId>").count(), 3, "{body}");
    let (_, body) = ec2(&app, &[("Action", "DescribeSubnets"), ("SubnetId.1", &id)]).await;
    assert_eq!(body.matches("<item><subnetId>").count(), 1, "{body}");
    let count = |name: &'static str, value: &'static str| {
        let app = app.clone();
        async move {
            let (status, body) =
                ec2(&app, &[("Action", "DescribeSubnets"), ("Filter.1.Name", name), ("Filter.1.Value.1", value)]).await;
            assert_eq!(status, 200, "{body}");
            body.matches("<item><subnetId>").count()
        }
    };
    assert_eq!(count("availability-zone", "us-east-1b").await, 1);
    assert_eq!(count("availability-zone", "us-east-1?").await, 3);
    assert_eq!(count("cidr-block", "10.0.2.0/28").await, 1);
    assert_eq!(count("tag:Name", "private").await, 1);
    assert_eq!(count("default-for-az", "true").await, 0);
    let (_, body) =
        ec2(&app, &[("Action", "DescribeSubnets"), ("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)]).await;
    assert_eq!(body.matches("<item><subnetId>").count(), 3, "{body}");
    let (_, body) =
        ec2(&app, &[("Action", "DescribeSubnets"), ("Filter.1.Name", "nope"), ("Filter.1.Value.1", "x")]).await;
    assert_eq!(code(&body), "InvalidParameterValue");

    let (status, body) = ec2(&app, &[("Action", "DeleteSubnet"), ("SubnetId", &id)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<return>true</return>"), "{body}");
    let (_, body) = ec2(&app, &[("Action", "DescribeSubnets"), ("SubnetId.1", &id)]).await;
    assert_eq!(code(&body), "InvalidSubnetID.NotFound");
    assert!(body.contains(&format!("The subnet ID &apos;{id}&apos; does not exist")), "{body}");
    // Its block is free again.
    subnet(&app, &vpc, "10.0.1.0/25").await;
}

#[tokio::test]
async fn create_errors() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    subnet(&app, &vpc, "10.0.1.0/24").await;
    let v = vpc.as_str();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("CidrBlock", "10.0.2.0/24")], "MissingParameter"),
        (&[("VpcId", v)], "MissingParameter"),
        (&[("VpcId", "vpc-zz"), ("CidrBlock", "10.0.2.0/24")], "InvalidVpcID.Malformed"),
        (&[("VpcId", "vpc-0123456789abcdef0"), ("CidrBlock", "10.0.2.0/24")], "InvalidVpcID.NotFound"),
        (&[("VpcId", v), ("CidrBlock", "10.0.2.0/33")], "InvalidParameterValue"),
        (&[("VpcId", v), ("CidrBlock", "10.1.0.0/24")], "InvalidSubnet.Range"),
        (&[("VpcId", v), ("CidrBlock", "10.0.0.0/15")], "InvalidSubnet.Range"),
        (&[("VpcId", v), ("CidrBlock", "10.0.0.0/29")], "InvalidSubnet.Range"),
        (&[("VpcId", v), ("CidrBlock", "10.0.1.128/25")], "InvalidSubnet.Conflict"),
        (&[("VpcId", v), ("CidrBlock", "10.0.0.0/16")], "InvalidSubnet.Conflict"),
        (&[("VpcId", v), ("CidrBlock", "10.0.2.0/24"), ("AvailabilityZone", "eu-west-1a")], "InvalidParameterValue"),
        (
            &[
                ("VpcId", v),
                ("CidrBlock", "10.0.2.0/24"),
                ("AvailabilityZone", "us-east-1a"),
                ("AvailabilityZoneId", "use1-az1"),
            ],
            "InvalidParameterCombination",
        ),
        (
            &[("VpcId", v), ("CidrBlock", "10.0.2.0/24"), ("TagSpecification.1.ResourceType", "vpc")],
            "InvalidParameterValue",
        ),
        (&[("VpcId", v), ("CidrBlock", "10.0.2.0/24"), ("DryRun", "true")], "DryRunOperation"),
    ];
    for (params, expected) in cases {
        let mut all = vec![("Action", "CreateSubnet")];
        all.extend_from_slice(params);
        let (_, body) = ec2(&app, &all).await;
        assert_eq!(code(&body), *expected, "{params:?}: {body}");
    }
    let (_, body) = ec2(&app, &[("Action", "DescribeSubnets")]).await;
    assert_eq!(body.matches("<item><subnetId>").count(), 1, "{body}");
    // The same block in another VPC is fine.
    let other = crate::ec2::testing::vpc(&app, "10.0.0.0/16").await;
    subnet(&app, &other, "10.0.1.0/24").await;
}

#[tokio::test]
async fn delete_errors_and_users() {
    let (app, store, _dir) = app_and_store();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    let id = subnet(&app, &vpc, "10.0.1.0/24").await;
    let (_, body) = ec2(&app, &[("Action", "DeleteSubnet")]).await;
    assert_eq!(code(&body), "MissingParameter");
    let (_, body) = ec2(&app, &[("Action", "DeleteSubnet"), ("SubnetId", "subnet-1")]).await;
    assert_eq!(code(&body), "InvalidSubnetID.Malformed");
    let (_, body) = ec2(&app, &[("Action", "DeleteSubnet"), ("SubnetId", "subnet-0123456789abcdef0")]).await;
    assert_eq!(code(&body), "InvalidSubnetID.NotFound");
    bump(store.as_ref(), rel::SUBNET_USERS, &id, 1).await;
    let (_, body) = ec2(&app, &[("Action", "DeleteSubnet"), ("SubnetId", &id)]).await;
    assert_eq!(code(&body), "DependencyViolation");
    bump(store.as_ref(), rel::SUBNET_USERS, &id, -1).await;
    let (_, body) = ec2(&app, &[("Action", "DeleteSubnet"), ("SubnetId", &id), ("DryRun", "true")]).await;
    assert_eq!(code(&body), "DryRunOperation");
    let (status, _) = ec2(&app, &[("Action", "DeleteSubnet"), ("SubnetId", &id)]).await;
    assert_eq!(status, 200);
    let (status, body) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &vpc)]).await;
    assert_eq!(status, 200, "the VPC has no subnets left: {body}");
}

#[tokio::test]
async fn paging() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    for i in 0..6 {
        subnet(&app, &vpc, &format!("10.0.{i}.0/24")).await;
    }
    let (_, first) = ec2(&app, &[("Action", "DescribeSubnets"), ("MaxResults", "5")]).await;
    assert_eq!(first.matches("<item><subnetId>").count(), 5, "{first}");
    let token = between(&first, "<nextToken>", "</nextToken>").to_owned();
    let (_, second) = ec2(&app, &[("Action", "DescribeSubnets"), ("MaxResults", "5"), ("NextToken", &token)]).await;
    assert_eq!(second.matches("<item><subnetId>").count(), 1, "{second}");
    assert!(!second.contains("<nextToken>"));
}

#[test]
fn zone_ids() {
    assert_eq!(zone_id("us-east-1", "us-east-1a"), "use1-az1");
    assert_eq!(zone_id("eu-west-2", "eu-west-2c"), "euw2-az3");
    assert_eq!(zone_id("ap-southeast-2", "ap-southeast-2b"), "apse2-az2");
    assert_eq!(zone_id("ap-northeast-1", "ap-northeast-1a"), "apne1-az1");
    assert_eq!(zone_id("eu-north-1", "eu-north-1a"), "eun1-az1");
    assert_eq!(zone_id("ca-central-1", "ca-central-1a"), "cac1-az1");
    // Regions come from the signature's scope: odd ones must not panic.
    assert!(zone_id("ü-ß-1", "ü-ß-1a").ends_with("-az1"));
}

#[tokio::test]
async fn concurrent_overlapping_creates_admit_one() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    // Every block holds 10.0.0.0, so each overlaps the others; the four calls interleave at every store access.
    let create = |cidr: &'static str| {
        let (app, vpc) = (app.clone(), vpc.clone());
        async move { ec2(&app, &[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", cidr)]).await.1 }
    };
    let (a, b, c, d) =
        tokio::join!(create("10.0.0.0/24"), create("10.0.0.0/23"), create("10.0.0.0/25"), create("10.0.0.0/22"));
    let mut created = 0;
    for body in [a, b, c, d] {
        if body.contains("<subnetId>") {
            created += 1;
        } else {
            assert_eq!(code(&body), "InvalidSubnet.Conflict", "{body}");
        }
    }
    assert_eq!(created, 1);
}
