use axum::Router;

use crate::ec2::testing::{between, code};
use crate::test_util::{app, iam};

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const POLICY: &str = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice";

/// A request's parameters, and the status and error code it must get.
type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);

async fn create(app: &Router, name: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut params = vec![("Action", "CreateRole"), ("RoleName", name), ("AssumeRolePolicyDocument", TRUST)];
    params.extend_from_slice(extra);
    let (status, body) = iam(app, &params).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn roles_are_created_read_listed_and_deleted() {
    let (app, _dir) = app();
    let (status, body) = create(
        &app,
        "EcsInfra",
        &[
            ("Path", "/ecs/"),
            ("Description", "for <ECS>"),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "net"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(
            r#"<CreateRoleResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><CreateRoleResult><Role>"#
        ),
        "{body}"
    );
    assert_eq!(between(&body, "<Arn>", "</Arn>"), "arn:aws:iam::000000000000:role/ecs/EcsInfra");
    let id = between(&body, "<RoleId>", "</RoleId>");
    assert!(id.starts_with("AROA") && id.len() == 21, "{id}");
    assert_eq!(between(&body, "<Description>", "</Description>"), "for &lt;ECS&gt;");
    assert!(body.contains("<Tags><member><Key>team</Key><Value>net</Value></member></Tags>"), "{body}");
    assert!(body.contains("<ResponseMetadata><RequestId>"), "{body}");

    // Names are looked up regardless of case; the document comes back percent-encoded.
    let (status, body) = iam(&app, &[("Action", "GetRole"), ("RoleName", "ecsinfra")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<RoleName>", "</RoleName>"), "EcsInfra");
    let encoded = between(&body, "<AssumeRolePolicyDocument>", "</AssumeRolePolicyDocument>");
    assert!(encoded.starts_with("%7B%22Version%22%3A%222012-10-17%22"), "{encoded}");
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8().unwrap();
    assert_eq!(decoded, TRUST);
    assert_eq!(between(&body, "<MaxSessionDuration>", "</MaxSessionDuration>"), "3600");

    let (status, body) = create(&app, "ECSINFRA", &[]).await;
    assert_eq!((status, code(&body)), (409, "EntityAlreadyExists"), "{body}");

    let (status, body) = iam(&app, &[("Action", "ListRoles"), ("PathPrefix", "/ecs/")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Roles><member><Path>/ecs/</Path><RoleName>EcsInfra</RoleName>"), "{body}");
    assert!(!body.contains("<Tags>"), "ListRoles leaves tags out: {body}");
    assert!(body.contains("<IsTruncated>false</IsTruncated>"), "{body}");
    let (_, body) = iam(&app, &[("Action", "ListRoles"), ("PathPrefix", "/other/")]).await;
    assert!(body.contains("<Roles></Roles>"), "{body}");

    let (status, body) = iam(&app, &[("Action", "DeleteRole"), ("RoleName", "EcsInfra")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("<DeleteRoleResponse") && !body.contains("DeleteRoleResult"), "{body}");
    let (status, body) = iam(&app, &[("Action", "GetRole"), ("RoleName", "EcsInfra")]).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
    assert!(body.contains("<Type>Sender</Type>"), "{body}");
}

#[tokio::test]
async fn listings_page_with_markers() {
    let (app, _dir) = app();
    for i in 0..5 {
        assert_eq!(create(&app, &format!("role-{i}"), &[]).await.0, 200);
    }
    let mut names = Vec::new();
    let mut marker = String::new();
    loop {
        let mut params = vec![("Action", "ListRoles"), ("MaxItems", "2")];
        if !marker.is_empty() {
            params.push(("Marker", &marker));
        }
        let (status, body) = iam(&app, &params).await;
        assert_eq!(status, 200, "{body}");
        names.extend(body.split("<RoleName>").skip(1).map(|s| s[..s.find('<').unwrap()].to_owned()));
        if body.contains("<IsTruncated>false</IsTruncated>") {
            assert!(!body.contains("<Marker>"), "{body}");
            break;
        }
        marker = between(&body, "<Marker>", "</Marker>").to_owned();
    }
    assert_eq!(names, ["role-0", "role-1", "role-2", "role-3", "role-4"]);
    let (status, body) = iam(&app, &[("Action", "ListRoles"), ("Marker", "not-ours")]).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "ValidationError"), "{body}");
    let (status, body) = iam(&app, &[("Action", "ListRoles"), ("MaxItems", "0")]).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "ValidationError"), "{body}");
}

#[tokio::test]
async fn policies_attach_detach_and_guard_deletion() {
    let (app, _dir) = app();
    create(&app, "infra", &[]).await;
    let attach = [("Action", "AttachRolePolicy"), ("RoleName", "infra"), ("PolicyArn", POLICY)];
    let (status, body) = iam(&app, &attach).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(iam(&app, &attach).await.0, 200, "attaching twice is a no-op");

    let (_, body) = iam(&app, &[("Action", "ListAttachedRolePolicies"), ("RoleName", "infra")]).await;
    assert!(
        body.contains(&format!(
            "<AttachedPolicies><member><PolicyName>AmazonECSInfrastructureRolePolicyForVpcLattice</PolicyName><PolicyArn>{POLICY}</PolicyArn></member></AttachedPolicies><IsTruncated>false</IsTruncated>"
        )),
        "{body}"
    );
    let (_, body) =
        iam(&app, &[("Action", "ListAttachedRolePolicies"), ("RoleName", "infra"), ("PathPrefix", "/x/")]).await;
    assert!(body.contains("<AttachedPolicies></AttachedPolicies>"), "{body}");

    let (status, body) = iam(&app, &[("Action", "DeleteRole"), ("RoleName", "infra")]).await;
    assert_eq!((status.as_u16(), code(&body)), (409, "DeleteConflict"), "{body}");

    let detach = [("Action", "DetachRolePolicy"), ("RoleName", "infra"), ("PolicyArn", POLICY)];
    assert_eq!(iam(&app, &detach).await.0, 200);
    let (status, body) = iam(&app, &detach).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
    assert_eq!(iam(&app, &[("Action", "DeleteRole"), ("RoleName", "infra")]).await.0, 200);
    // A role made again under the same name starts with nothing attached.
    create(&app, "infra", &[]).await;
    let (_, body) = iam(&app, &[("Action", "ListAttachedRolePolicies"), ("RoleName", "infra")]).await;
    assert!(body.contains("<AttachedPolicies></AttachedPolicies>"), "{body}");
}

#[tokio::test]
async fn unknown_policies_and_roles() {
    let (app, _dir) = app();
    create(&app, "infra", &[]).await;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("infra", "arn:aws:iam::aws:policy/AdministratorAccess", 404, "NoSuchEntity"),
        ("infra", "arn:aws:iam::000000000000:policy/mine", 404, "NoSuchEntity"),
        ("infra", "arn:aws:s3:::some-bucket-name", 400, "InvalidInput"),
        ("infra", "short", 400, "ValidationError"),
        ("nobody", POLICY, 404, "NoSuchEntity"),
        ("bad name!", POLICY, 400, "ValidationError"),
    ];
    for (role, arn, status, wanted) in cases {
        let (got, body) = iam(&app, &[("Action", "AttachRolePolicy"), ("RoleName", role), ("PolicyArn", arn)]).await;
        assert_eq!((got.as_u16(), code(&body)), (*status, *wanted), "{role} {arn}: {body}");
    }
    let (_, body) = iam(
        &app,
        &[
            ("Action", "AttachRolePolicy"),
            ("RoleName", "infra"),
            ("PolicyArn", "arn:aws:iam::000000000000:policy/mine"),
        ],
    )
    .await;
    assert!(body.contains("CreatePolicy"), "{body}");
    let (status, body) = iam(&app, &[("Action", "ListAttachedRolePolicies"), ("RoleName", "nobody")]).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
}

#[tokio::test]
async fn create_validates_like_iam() {
    let (app, _dir) = app();
    let long = "x".repeat(65);
    let cases: &[Case<'_>] = &[
        (&[("Action", "CreateRole"), ("AssumeRolePolicyDocument", TRUST)], 400, "ValidationError"),
        (&[("Action", "CreateRole"), ("RoleName", "a")], 400, "ValidationError"),
        (&[("Action", "CreateRole"), ("RoleName", &long), ("AssumeRolePolicyDocument", TRUST)], 400, "ValidationError"),
        (
            &[("Action", "CreateRole"), ("RoleName", "a"), ("Path", "nope"), ("AssumeRolePolicyDocument", TRUST)],
            400,
            "ValidationError",
        ),
        (
            &[
                ("Action", "CreateRole"),
                ("RoleName", "a"),
                ("MaxSessionDuration", "60"),
                ("AssumeRolePolicyDocument", TRUST),
            ],
            400,
            "ValidationError",
        ),
        (
            &[("Action", "CreateRole"), ("RoleName", "a"), ("AssumeRolePolicyDocument", "{nope")],
            400,
            "MalformedPolicyDocument",
        ),
        (
            &[
                ("Action", "CreateRole"),
                ("RoleName", "a"),
                ("AssumeRolePolicyDocument", TRUST),
                ("PermissionsBoundary", POLICY),
            ],
            400,
            "InvalidInput",
        ),
        (
            &[
                ("Action", "CreateRole"),
                ("RoleName", "a"),
                ("AssumeRolePolicyDocument", TRUST),
                ("Tags.member.1.Key", "k"),
                ("Tags.member.1.Value", "1"),
                ("Tags.member.2.Key", "K"),
                ("Tags.member.2.Value", "2"),
            ],
            400,
            "InvalidInput",
        ),
        (&[("Action", "CreateGroup")], 400, "InvalidAction"),
        (&[], 400, "MissingAction"),
    ];
    for (params, status, wanted) in cases {
        let (got, body) = iam(&app, params).await;
        assert_eq!((got.as_u16(), code(&body)), (*status, *wanted), "{params:?}: {body}");
    }
    let (_, body) = iam(&app, &[("Action", "CreateRole")]).await;
    assert!(body.contains("2 validation errors detected: Value null at &apos;roleName&apos;"), "{body}");
    let big = format!(
        r#"{{"Statement":{{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole","Sid":"{}"}}}}"#,
        "s".repeat(2100)
    );
    let (status, body) =
        iam(&app, &[("Action", "CreateRole"), ("RoleName", "a"), ("AssumeRolePolicyDocument", &big)]).await;
    assert_eq!((status.as_u16(), code(&body)), (409, "LimitExceeded"), "{body}");
}

#[tokio::test]
async fn users_are_created_read_listed_and_deleted() {
    let (app, _dir) = app();
    let params = [("Action", "CreateUser"), ("UserName", "Alice"), ("Path", "/eng/")];
    let (status, body) = iam(&app, &params).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<Arn>", "</Arn>"), "arn:aws:iam::000000000000:user/eng/Alice");
    let id = between(&body, "<UserId>", "</UserId>");
    assert!(id.starts_with("AIDA") && id.len() == 21, "{id}");
    let (status, body) = iam(&app, &[("Action", "CreateUser"), ("UserName", "ALICE")]).await;
    assert_eq!((status.as_u16(), code(&body)), (409, "EntityAlreadyExists"), "{body}");
    let (status, body) = iam(&app, &[("Action", "GetUser"), ("UserName", "alice")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<UserName>", "</UserName>"), "Alice");
    // Without a name, the caller: unsigned, the root.
    let (status, body) = iam(&app, &[("Action", "GetUser")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<Arn>", "</Arn>"), "arn:aws:iam::000000000000:root");
    let (_, body) = iam(&app, &[("Action", "ListUsers"), ("PathPrefix", "/eng/")]).await;
    assert!(body.contains("<Users><member><Path>/eng/</Path><UserName>Alice</UserName>"), "{body}");
    let (status, body) = iam(&app, &[("Action", "GetUser"), ("UserName", "nobody")]).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
    let (status, body) = iam(&app, &[("Action", "CreateUser"), ("UserName", "bad name")]).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "ValidationError"), "{body}");
    let (status, _) = iam(&app, &[("Action", "DeleteUser"), ("UserName", "Alice")]).await;
    assert_eq!(status, 200);
    let (status, body) = iam(&app, &[("Action", "DeleteUser"), ("UserName", "Alice")]).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
}

#[tokio::test]
async fn access_keys_are_limited_and_guard_their_user() {
    let (app, _dir) = app();
    assert_eq!(iam(&app, &[("Action", "CreateUser"), ("UserName", "bob")]).await.0, 200);
    let mut made = Vec::new();
    for _ in 0..2 {
        let (status, body) = iam(&app, &[("Action", "CreateAccessKey"), ("UserName", "bob")]).await;
        assert_eq!(status, 200, "{body}");
        let key = between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned();
        assert!(key.starts_with("AKIA") && key.len() == 20, "{key}");
        assert_eq!(between(&body, "<SecretAccessKey>", "</SecretAccessKey>").len(), 40);
        assert!(body.contains("<UserName>bob</UserName>") && body.contains("<Status>Active</Status>"), "{body}");
        made.push(key);
    }
    let (status, body) = iam(&app, &[("Action", "CreateAccessKey"), ("UserName", "bob")]).await;
    assert_eq!((status.as_u16(), code(&body)), (409, "LimitExceeded"), "{body}");
    assert!(body.contains("AccessKeysPerUser: 2"), "{body}");
    let (_, body) = iam(&app, &[("Action", "ListAccessKeys"), ("UserName", "bob")]).await;
    assert!(made.iter().all(|k| body.contains(k.as_str())), "{body}");
    assert!(!body.contains("SecretAccessKey"), "{body}");
    let (status, body) = iam(&app, &[("Action", "DeleteUser"), ("UserName", "bob")]).await;
    assert_eq!((status.as_u16(), code(&body)), (409, "DeleteConflict"), "{body}");
    for key in &made {
        let params = [("Action", "DeleteAccessKey"), ("UserName", "bob"), ("AccessKeyId", key.as_str())];
        assert_eq!(iam(&app, &params).await.0, 200);
    }
    let params = [("Action", "DeleteAccessKey"), ("UserName", "bob"), ("AccessKeyId", made[0].as_str())];
    let (status, body) = iam(&app, &params).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
    assert_eq!(iam(&app, &[("Action", "DeleteUser"), ("UserName", "bob")]).await.0, 200);
    let (status, body) = iam(&app, &[("Action", "CreateAccessKey"), ("UserName", "bob")]).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
}

#[tokio::test]
async fn roles_and_users_are_tagged() {
    let (app, _dir) = app();
    assert_eq!(create(&app, "tagged", &[("Tags.member.1.Key", "a"), ("Tags.member.1.Value", "1")]).await.0, 200);
    let params = [
        ("Action", "TagRole"),
        ("RoleName", "tagged"),
        ("Tags.member.1.Key", "A"),
        ("Tags.member.1.Value", "2"),
        ("Tags.member.2.Key", "b"),
        ("Tags.member.2.Value", "3"),
    ];
    assert_eq!(iam(&app, &params).await.0, 200);
    let (_, body) = iam(&app, &[("Action", "ListRoleTags"), ("RoleName", "tagged")]).await;
    assert!(
        body.contains(
            "<Tags><member><Key>A</Key><Value>2</Value></member><member><Key>b</Key><Value>3</Value></member></Tags>"
        ),
        "{body}"
    );
    let params = [("Action", "UntagRole"), ("RoleName", "tagged"), ("TagKeys.member.1", "a")];
    assert_eq!(iam(&app, &params).await.0, 200);
    let (_, body) = iam(&app, &[("Action", "ListRoleTags"), ("RoleName", "tagged"), ("MaxItems", "1")]).await;
    assert!(body.contains("<Key>b</Key>") && body.contains("<IsTruncated>false</IsTruncated>"), "{body}");
    let params =
        [("Action", "TagRole"), ("RoleName", "tagged"), ("Tags.member.1.Key", "aws:x"), ("Tags.member.1.Value", "")];
    let (status, body) = iam(&app, &params).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "InvalidInput"), "{body}");
    let params =
        [("Action", "TagUser"), ("UserName", "ghost"), ("Tags.member.1.Key", "k"), ("Tags.member.1.Value", "v")];
    let (status, body) = iam(&app, &params).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "NoSuchEntity"), "{body}");
    assert_eq!(iam(&app, &[("Action", "CreateUser"), ("UserName", "u")]).await.0, 200);
    let params = [("Action", "TagUser"), ("UserName", "u"), ("Tags.member.1.Key", "k"), ("Tags.member.1.Value", "v")];
    assert_eq!(iam(&app, &params).await.0, 200);
    let (_, body) = iam(&app, &[("Action", "ListUserTags"), ("UserName", "u")]).await;
    assert!(body.contains("<Tags><member><Key>k</Key><Value>v</Value></member></Tags>"), "{body}");
    let (_, body) = iam(&app, &[("Action", "GetUser"), ("UserName", "u")]).await;
    assert!(body.contains("<Key>k</Key>"), "{body}");
    let params = [("Action", "UntagUser"), ("UserName", "u"), ("TagKeys.member.1", "K")];
    assert_eq!(iam(&app, &params).await.0, 200);
    let (_, body) = iam(&app, &[("Action", "ListUserTags"), ("UserName", "u")]).await;
    assert!(body.contains("<Tags></Tags>"), "{body}");
    let (status, body) = iam(&app, &[("Action", "TagUser"), ("UserName", "u")]).await;
    assert_eq!((status.as_u16(), code(&body)), (400, "ValidationError"), "{body}");
}
