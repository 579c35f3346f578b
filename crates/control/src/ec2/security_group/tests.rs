//! Tests of CreateSecurityGroup, DescribeSecurityGroups and DeleteSecurityGroup.

use crate::ec2::rel;
use crate::ec2::testing::{between, bump, code, group, vpc};
use crate::test_util::{app, app_and_store, ec2};

#[tokio::test]
async fn create_describe_delete() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    let params = [
        ("Action", "CreateSecurityGroup"),
        ("VpcId", vpc.as_str()),
        ("GroupName", "web"),
        ("GroupDescription", "Web & API tier"),
        ("TagSpecification.1.ResourceType", "security-group"),
        ("TagSpecification.1.Tag.1.Key", "Name"),
        ("TagSpecification.1.Tag.1.Value", "web"),
    ];
    let (status, body) = ec2(&app, &params).await;
    assert_eq!(status, 200, "{body}");
    let id = between(&body, "<groupId>", "</groupId>").to_owned();
    assert!(id.starts_with("sg-0") && id.len() == 20, "{id}");
    assert!(
        body.contains(&format!(
            "<securityGroupArn>arn:aws:ec2:us-east-1:000000000000:security-group/{id}</securityGroupArn>"
        )),
        "{body}"
    );
    assert!(body.contains("<tagSet><item><key>Name</key><value>web</value></item></tagSet>"), "{body}");

    let (status, body) = ec2(&app, &[("Action", "DescribeSecurityGroups"), ("GroupId.1", &id)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<securityGroupInfo><item><ownerId>000000000000</ownerId>"), "{body}");
    assert!(
        body.contains("<groupName>web</groupName><groupDescription>Web &amp; API tier</groupDescription>"),
        "{body}"
    );
    assert!(body.contains(&format!("<vpcId>{vpc}</vpcId><ipPermissions></ipPermissions>")), "{body}");
    assert!(
        body.contains("<ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><groups></groups><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges>"),
        "{body}"
    );

    let count = |name: &'static str, value: String| {
        let app = app.clone();
        async move {
            let params =
                [("Action", "DescribeSecurityGroups"), ("Filter.1.Name", name), ("Filter.1.Value.1", value.as_str())];
            let (status, body) = ec2(&app, &params).await;
            assert_eq!(status, 200, "{body}");
            body.matches("<groupId>").count()
        }
    };
    assert_eq!(count("vpc-id", vpc.clone()).await, 2);
    assert_eq!(count("group-name", "w*".into()).await, 1);
    assert_eq!(count("group-name", "default".into()).await, 1);
    assert_eq!(count("group-id", id.clone()).await, 1);
    assert_eq!(count("tag:Name", "web".into()).await, 1);
    assert_eq!(count("description", "default VPC*".into()).await, 1);

    let (status, body) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", &id)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("<return>true</return><groupId>{id}</groupId>")), "{body}");
    let (_, body) = ec2(&app, &[("Action", "DescribeSecurityGroups"), ("GroupId.1", &id)]).await;
    assert_eq!(code(&body), "InvalidGroup.NotFound");
    assert!(body.contains(&format!("The security group &apos;{id}&apos; does not exist")), "{body}");
    // The name is free again.
    group(&app, &vpc, "web").await;
}

#[tokio::test]
async fn create_errors() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    group(&app, &vpc, "web").await;
    let v = vpc.as_str();
    let long = "x".repeat(256);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("VpcId", v), ("GroupDescription", "d")], "MissingParameter"),
        (&[("VpcId", v), ("GroupName", "a")], "MissingParameter"),
        (&[("GroupName", "a"), ("GroupDescription", "d")], "VPCIdNotSpecified"),
        (&[("VpcId", "vpc-x"), ("GroupName", "a"), ("GroupDescription", "d")], "InvalidVpcID.Malformed"),
        (&[("VpcId", "vpc-0123456789abcdef0"), ("GroupName", "a"), ("GroupDescription", "d")], "InvalidVpcID.NotFound"),
        (&[("VpcId", v), ("GroupName", "web"), ("GroupDescription", "d")], "InvalidGroup.Duplicate"),
        (&[("VpcId", v), ("GroupName", "default"), ("GroupDescription", "d")], "InvalidGroup.Reserved"),
        (&[("VpcId", v), ("GroupName", "sg-1"), ("GroupDescription", "d")], "InvalidParameterValue"),
        (&[("VpcId", v), ("GroupName", "a"), ("GroupDescription", &long)], "InvalidParameterValue"),
        (&[("VpcId", v), ("GroupName", "é"), ("GroupDescription", "d")], "InvalidParameterValue"),
        (&[("VpcId", v), ("GroupName", "a"), ("GroupDescription", "d"), ("DryRun", "true")], "DryRunOperation"),
    ];
    for (params, expected) in cases {
        let mut all = vec![("Action", "CreateSecurityGroup")];
        all.extend_from_slice(params);
        let (_, body) = ec2(&app, &all).await;
        assert_eq!(code(&body), *expected, "{params:?}: {body}");
    }
    // Names are unique per VPC only.
    let other = crate::ec2::testing::vpc(&app, "10.1.0.0/16").await;
    group(&app, &other, "web").await;
}

#[tokio::test]
async fn delete_guards() {
    let (app, store, _dir) = app_and_store();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    let sg = group(&app, &vpc, "db").await;
    let (_, body) = ec2(&app, &[("Action", "DeleteSecurityGroup")]).await;
    assert_eq!(code(&body), "MissingParameter");
    let (_, body) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupName", "db")]).await;
    assert_eq!(code(&body), "VPCIdNotSpecified");
    let (_, body) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", "sg-?")]).await;
    assert_eq!(code(&body), "InvalidGroupId.Malformed");
    let (_, body) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", "sg-0123456789abcdef0")]).await;
    assert_eq!(code(&body), "InvalidGroup.NotFound");

    let (_, body) = ec2(
        &app,
        &[("Action", "DescribeSecurityGroups"), ("Filter.1.Name", "group-name"), ("Filter.1.Value.1", "default")],
    )
    .await;
    let default = between(&body, "<groupId>", "</groupId>").to_owned();
    let (_, body) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", &default)]).await;
    assert_eq!(code(&body), "CannotDelete");

    bump(store.as_ref(), rel::SG_USERS, &sg, 1).await;
    let (_, body) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", &sg)]).await;
    assert_eq!(code(&body), "DependencyViolation");
    bump(store.as_ref(), rel::SG_USERS, &sg, -1).await;
    let (_, body) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", &sg), ("DryRun", "true")]).await;
    assert_eq!(code(&body), "DryRunOperation");
    let (status, _) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", &sg)]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn describe_errors_and_paging() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    for name in ["a", "b", "c", "d", "e"] {
        group(&app, &vpc, name).await;
    }
    let (_, body) = ec2(&app, &[("Action", "DescribeSecurityGroups"), ("GroupName.1", "a")]).await;
    assert_eq!(code(&body), "VPCIdNotSpecified");
    let (_, body) = ec2(&app, &[("Action", "DescribeSecurityGroups"), ("GroupId.1", "sg-x")]).await;
    assert_eq!(code(&body), "InvalidGroupId.Malformed");
    let (_, body) = ec2(&app, &[("Action", "DescribeSecurityGroups"), ("Filter.1.Name", "group-id")]).await;
    assert_eq!(code(&body), "InvalidParameterValue");
    let (_, first) = ec2(&app, &[("Action", "DescribeSecurityGroups"), ("MaxResults", "5")]).await;
    assert_eq!(first.matches("<groupName>").count(), 5, "{first}");
    let token = between(&first, "<nextToken>", "</nextToken>").to_owned();
    let (_, second) =
        ec2(&app, &[("Action", "DescribeSecurityGroups"), ("MaxResults", "5"), ("NextToken", &token)]).await;
    assert_eq!(second.matches("<groupName>").count(), 1, "{second}");
}

#[tokio::test]
async fn concurrent_creates_of_one_name_admit_one() {
    let (app, _dir) = app();
    let vpc = vpc(&app, "10.0.0.0/16").await;
    let create = || {
        let (app, vpc) = (app.clone(), vpc.clone());
        async move {
            let params = [
                ("Action", "CreateSecurityGroup"),
                ("VpcId", vpc.as_str()),
                ("GroupName", "same"),
                ("GroupDescription", "d"),
            ];
            ec2(&app, &params).await.1
        }
    };
    let (a, b, c, d) = tokio::join!(create(), create(), create(), create());
    let mut created = 0;
    for body in [a, b, c, d] {
        if body.contains("<groupId>") {
            created += 1;
        } else {
            assert_eq!(code(&body), "InvalidGroup.Duplicate", "{body}");
        }
    }
    assert_eq!(created, 1);
}
