use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_model::Timestamp;
use trellis_model::iam::{Credential, CredentialError, Identities, Owner, Principal, Tag};

use super::*;
use crate::ec2::testing::between;
use crate::test_util::{app_and_store, iam};

const ORG: &str = "o-trellis0000";

fn tag(k: &str, v: &str) -> Tag {
    Tag { key: k.into(), value: v.into() }
}

#[tokio::test]
async fn the_root_key_is_made_once() {
    let (_app, store, _dir) = app_and_store();
    let first = ensure_root_key(store.as_ref(), "000000000000").await.unwrap();
    assert!(first.access_key_id.starts_with("AKIA"), "{first:?}");
    assert_eq!(first.owner, Owner::Root);
    assert_eq!(ensure_root_key(store.as_ref(), "000000000000").await.unwrap(), first);
    let resolver = Resolver::new(store.clone(), ORG);
    let root = resolver.resolve(&first.access_key_id, None).await.unwrap();
    assert_eq!(root.secret_access_key, first.secret_access_key);
    assert_eq!(root.principal, Principal::Root { arn: "arn:aws:iam::000000000000:root".into() });
    assert_eq!((root.account.as_str(), root.organization_id.as_str()), ("000000000000", ORG));
    // Deleted through the API: the next start makes another.
    store
        .txn(trellis_store::Txn {
            compare: vec![],
            success: vec![trellis_store::Op::Delete(keys::credential(&first.access_key_id))],
            failure: vec![],
        })
        .await
        .unwrap();
    let second = ensure_root_key(store.as_ref(), "000000000000").await.unwrap();
    assert_ne!(second.access_key_id, first.access_key_id);
}

#[tokio::test]
async fn users_and_sessions_resolve_with_their_tags() {
    let (app, store, _dir) = app_and_store();
    let params = [
        ("Action", "CreateUser"),
        ("UserName", "alice"),
        ("Path", "/eng/"),
        ("Tags.member.1.Key", "team"),
        ("Tags.member.1.Value", "net"),
    ];
    assert_eq!(iam(&app, &params).await.0, 200);
    let (_, body) = iam(&app, &[("Action", "CreateAccessKey"), ("UserName", "alice")]).await;
    let key = between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned();
    let secret = between(&body, "<SecretAccessKey>", "</SecretAccessKey>").to_owned();
    let resolver = Resolver::new(store.clone(), ORG);
    let alice = resolver.resolve(&key, None).await.unwrap();
    assert_eq!(alice.secret_access_key, secret);
    assert!(
        matches!(&alice.principal, Principal::User { arn, user_name, .. }
            if arn == "arn:aws:iam::000000000000:user/eng/alice" && user_name == "alice"),
        "{alice:?}"
    );
    assert_eq!(alice.principal_tags, [tag("team", "net")]);
    assert_eq!(
        resolver.resolve("AKIAUNKNOWN0000000", None).await.unwrap_err().to_string(),
        "the access key ID does not exist"
    );

    // A session: the role's tags, overridden by the session's.
    let trust = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":"sts:AssumeRole"}}"#;
    let params = [
        ("Action", "CreateRole"),
        ("RoleName", "builder"),
        ("AssumeRolePolicyDocument", trust),
        ("Tags.member.1.Key", "team"),
        ("Tags.member.1.Value", "build"),
        ("Tags.member.2.Key", "tier"),
        ("Tags.member.2.Value", "1"),
    ];
    assert_eq!(iam(&app, &params).await.0, 200);
    let session = Credential {
        access_key_id: "ASIATESTSESSION00001".into(),
        secret_access_key: "x".repeat(40),
        account: "000000000000".into(),
        owner: Owner::AssumedRole {
            role_name: "builder".into(),
            role_arn: "arn:aws:iam::000000000000:role/builder".into(),
            role_id: role_id(&app).await,
            session_name: "ci".into(),
            session_tags: vec![tag("Team", "ci")],
        },
        status: "Active".into(),
        create_date: crate::now(),
        expiration: Some(Timestamp(crate::now().0 + 60_000)),
        session_token: Some("token".into()),
    };
    put(store.as_ref(), &session).await;
    let found = resolver.resolve("ASIATESTSESSION00001", Some("token")).await.unwrap();
    assert_eq!(found.principal.arn(), "arn:aws:sts::000000000000:assumed-role/builder/ci");
    assert_eq!(found.principal.policy_arn(), "arn:aws:iam::000000000000:role/builder");
    assert_eq!(found.principal_tags, [tag("tier", "1"), tag("Team", "ci")]);
    assert!(matches!(
        resolver.resolve("ASIATESTSESSION00001", None).await,
        Err(ResolveError::Credential(CredentialError::InvalidToken))
    ));
    let expired = Credential { expiration: Some(Timestamp(1)), ..session.clone() };
    put(store.as_ref(), &expired).await;
    assert!(matches!(
        resolver.resolve("ASIATESTSESSION00001", Some("token")).await,
        Err(ResolveError::Credential(CredentialError::Expired))
    ));

    // Long expired sessions are forgotten; the fresh one and the root's keys are kept.
    let long_ago = Credential { access_key_id: "ASIATESTSESSION00002".into(), ..expired.clone() };
    put(store.as_ref(), &long_ago).await;
    let day = u64::try_from(EXPIRED_SESSION_GRACE.as_millis()).unwrap();
    assert_eq!(sweep_sessions(store.as_ref(), 2 + day).await.unwrap(), 2);
    assert!(resolver.find("ASIATESTSESSION00002").await.unwrap().is_none());
    assert!(resolver.find(&key).await.unwrap().is_some());

    // A deleted role takes its sessions with it.
    put(store.as_ref(), &session).await;
    assert_eq!(iam(&app, &[("Action", "DeleteRole"), ("RoleName", "builder")]).await.0, 200);
    assert!(resolver.find("ASIATESTSESSION00001").await.unwrap().is_none());
}

#[tokio::test]
async fn the_data_plane_copy_follows_the_store() {
    let (app, store, _dir) = app_and_store();
    let root = ensure_root_key(store.as_ref(), "000000000000").await.unwrap();
    let (tx, mut rx) = watch::channel(Arc::new(Identities::default()));
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(run(store.clone(), ORG.into(), tx, stop));
    let wait = |rx: &mut watch::Receiver<Arc<Identities>>, what: &'static str, pred: fn(&Identities) -> bool| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|i| pred(i)))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .map(|_| ())
                .unwrap();
        }
    };
    wait(&mut rx, "the root key", |i| i.by_key.len() == 1).await;
    assert!(rx.borrow().find(&root.access_key_id, None, 0).is_ok());

    assert_eq!(iam(&app, &[("Action", "CreateUser"), ("UserName", "bob")]).await.0, 200);
    let (_, body) = iam(&app, &[("Action", "CreateAccessKey"), ("UserName", "bob")]).await;
    let key = between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned();
    wait(&mut rx, "bob's key", |i| i.by_key.len() == 2).await;
    let params = [("Action", "TagUser"), ("UserName", "bob"), ("Tags.member.1.Key", "k"), ("Tags.member.1.Value", "v")];
    assert_eq!(iam(&app, &params).await.0, 200);
    wait(&mut rx, "bob's tag", |i| i.by_key.values().any(|id| !id.principal_tags.is_empty())).await;
    assert_eq!(rx.borrow().find(&key, None, 0).unwrap().principal_tags, [tag("k", "v")]);

    let params = [("Action", "DeleteAccessKey"), ("UserName", "bob"), ("AccessKeyId", key.as_str())];
    assert_eq!(iam(&app, &params).await.0, 200);
    wait(&mut rx, "bob's key gone", |i| i.by_key.len() == 1).await;
    assert_eq!(rx.borrow().find(&key, None, 0).unwrap_err(), CredentialError::UnknownKey);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

async fn role_id(app: &axum::Router) -> String {
    let (_, body) = iam(app, &[("Action", "GetRole"), ("RoleName", "builder")]).await;
    between(&body, "<RoleId>", "</RoleId>").to_owned()
}

async fn put(store: &dyn Store, credential: &Credential) {
    let mut tx = Tx::default();
    tx.put(keys::credential(&credential.access_key_id), credential);
    assert!(Attempts::default().commit(store, tx).await.unwrap());
}
