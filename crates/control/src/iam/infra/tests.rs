use std::sync::Arc;

use trellis_store::Store;

use crate::iam::{RoleProblem, check_infrastructure_role};
use crate::test_util::{app_and_store, iam};

const ACCOUNT: &str = "000000000000";
const POLICY: &str = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice";

async fn role(app: &axum::Router, name: &str, path: &str, trust: &str) {
    let params = [("Action", "CreateRole"), ("RoleName", name), ("Path", path), ("AssumeRolePolicyDocument", trust)];
    let (status, body) = iam(app, &params).await;
    assert_eq!(status, 200, "{body}");
}

async fn attach(app: &axum::Router, name: &str) {
    let (status, body) = iam(app, &[("Action", "AttachRolePolicy"), ("RoleName", name), ("PolicyArn", POLICY)]).await;
    assert_eq!(status, 200, "{body}");
}

async fn check(store: &Arc<dyn Store>, arn: &str) -> Result<(), RoleProblem> {
    check_infrastructure_role(store.as_ref(), ACCOUNT, arn).await.expect("store")
}

#[tokio::test]
async fn a_trusted_role_with_the_managed_policy_qualifies() {
    let (app, store, _dir) = app_and_store();
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["ecs-tasks.amazonaws.com","ecs.amazonaws.com"]},"Action":["sts:AssumeRole"]}]}"#;
    role(&app, "ecsInfrastructureRole", "/service/", trust).await;
    let arn = "arn:aws:iam::000000000000:role/service/ecsInfrastructureRole";
    assert_eq!(check(&store, arn).await, Err(RoleProblem::MissingPermissions));
    attach(&app, "ecsInfrastructureRole").await;
    assert_eq!(check(&store, arn).await, Ok(()));
    // The role's name is matched regardless of case; its path and account must be its own.
    assert_eq!(check(&store, "arn:aws:iam::000000000000:role/service/ECSINFRASTRUCTUREROLE").await, Ok(()));
    assert_eq!(check(&store, "arn:aws:iam::000000000000:role/ecsInfrastructureRole").await, Err(RoleProblem::NotFound));
    assert_eq!(
        check(&store, "arn:aws:iam::111122223333:role/service/ecsInfrastructureRole").await,
        Err(RoleProblem::NotFound)
    );
}

#[tokio::test]
async fn missing_and_untrusted_roles_are_refused() {
    let (app, store, _dir) = app_and_store();
    for arn in ["arn:aws:iam::000000000000:role/nobody", "not an arn", "arn:aws:iam::000000000000:role/"] {
        assert_eq!(check(&store, arn).await, Err(RoleProblem::NotFound), "{arn}");
    }
    let ec2 =
        r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}}"#;
    role(&app, "ec2role", "/", ec2).await;
    attach(&app, "ec2role").await;
    assert_eq!(check(&store, "arn:aws:iam::000000000000:role/ec2role").await, Err(RoleProblem::NotTrusted));
    let denied =
        r#"{"Statement":{"Effect":"Deny","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}}"#;
    role(&app, "denied", "/", denied).await;
    attach(&app, "denied").await;
    assert_eq!(check(&store, "arn:aws:iam::000000000000:role/denied").await, Err(RoleProblem::NotTrusted));
    let other_action =
        r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:TagSession"}}"#;
    role(&app, "tagonly", "/", other_action).await;
    attach(&app, "tagonly").await;
    assert_eq!(check(&store, "arn:aws:iam::000000000000:role/tagonly").await, Err(RoleProblem::NotTrusted));
}
