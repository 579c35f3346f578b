//! ECS API handler tests: each operation through the router, and the runtime interface.

use axum::Router;
use serde_json::{Value, json};
use trellis_model::ecs::status;

use super::runtime;
use crate::ec2::testing::{between, subnet, vpc};
use crate::test_util::{app, app_and_store, call, ec2, ecs, iam};

/// Calls `op`, expecting success.
async fn ok(app: &Router, op: &str, body: Value) -> Value {
    let (status, out) = ecs(app, op, body).await;
    assert_eq!(status, 200, "{op}: {out}");
    out
}

/// Calls `op`, expecting the error `code`; returns its message.
async fn fails(app: &Router, op: &str, body: Value, code: &str) -> String {
    let (status, out) = ecs(app, op, body).await;
    assert_eq!((status.as_u16(), out["__type"].as_str().unwrap_or_default()), (400, code), "{op}: {out}");
    out["message"].as_str().unwrap_or_default().to_owned()
}

fn web_def() -> Value {
    json!({
        "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "web", "image": "nginx",
            "portMappings": [{"containerPort": 8080, "name": "web-8080"}]}]
    })
}

/// A VPC with a subnet and a security group, and an IP target group in it.
struct Net {
    vpc: String,
    subnet: String,
    sg: String,
    tg_arn: String,
}

/// The ECS infrastructure role, with the managed policy attached (made once per API).
async fn infra_role(app: &Router) {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let name = "ecsInfrastructureRoleForVpcLattice";
    let (s, body) =
        iam(app, &[("Action", "CreateRole"), ("RoleName", name), ("AssumeRolePolicyDocument", trust)]).await;
    assert!(s == 200 || body.contains("EntityAlreadyExists"), "{body}");
    let policy = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice";
    let (s, body) = iam(app, &[("Action", "AttachRolePolicy"), ("RoleName", name), ("PolicyArn", policy)]).await;
    assert_eq!(s, 200, "{body}");
}

async fn net(app: &Router, cidr: &str, tg_name: &str) -> Net {
    infra_role(app).await;
    let vpc = vpc(app, cidr).await;
    let subnet = subnet(app, &vpc, &cidr.replace("0.0/16", "1.0/24")).await;
    let (_, body) = ec2(
        app,
        &[("Action", "CreateSecurityGroup"), ("GroupName", "tasks"), ("GroupDescription", "t"), ("VpcId", &vpc)],
    )
    .await;
    let sg = between(&body, "<groupId>", "</groupId>").to_owned();
    let config = json!({"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc});
    let (s, _, tg) =
        call(app, "POST", "/targetgroups", Some(json!({"name": tg_name, "type": "IP", "config": config}))).await;
    assert_eq!(s, 201, "{tg}");
    Net { vpc, subnet, sg, tg_arn: tg["arn"].as_str().unwrap().to_owned() }
}

fn network(net: &Net) -> Value {
    json!({"awsvpcConfiguration": {"subnets": [net.subnet], "securityGroups": [net.sg]}})
}

fn lattice(net: &Net, port_name: &str) -> Value {
    json!([{"roleArn": "arn:aws:iam::000000000000:role/ecsInfrastructureRoleForVpcLattice",
            "targetGroupArn": net.tg_arn, "portName": port_name}])
}

#[tokio::test]
async fn clusters() {
    let (app, _dir) = app();
    // Nothing exists until created: no implicit default cluster.
    fails(&app, "ListServices", json!({}), "ClusterNotFoundException").await;
    let out = ok(&app, "CreateCluster", json!({})).await;
    assert_eq!(out["cluster"]["clusterArn"], "arn:aws:ecs:us-east-1:000000000000:cluster/default");
    assert_eq!(out["cluster"]["status"], "ACTIVE");
    assert_eq!(out["cluster"]["runningTasksCount"], 0);
    // Idempotent.
    let again = ok(&app, "CreateCluster", json!({"clusterName": "default"})).await;
    assert_eq!(again["cluster"]["clusterArn"], out["cluster"]["clusterArn"]);
    fails(&app, "CreateCluster", json!({"clusterName": "bad/name"}), "InvalidParameterException").await;
    for name in ["a", "b", "c"] {
        ok(&app, "CreateCluster", json!({"clusterName": name, "tags": [{"key": "k", "value": name}]})).await;
    }
    let out = ok(&app, "DescribeClusters", json!({"clusters": ["a", "nope"], "include": ["TAGS"]})).await;
    assert_eq!(out["clusters"][0]["tags"], json!([{"key": "k", "value": "a"}]));
    assert_eq!(
        out["failures"],
        json!([{"arn": "arn:aws:ecs:us-east-1:000000000000:cluster/nope", "reason": "MISSING"}])
    );
    let out = ok(&app, "DescribeClusters", json!({})).await;
    assert_eq!(out["clusters"][0]["clusterName"], "default");
    assert!(out["clusters"][0].get("tags").is_none());

    // Paging.
    let page = ok(&app, "ListClusters", json!({"maxResults": 3})).await;
    assert_eq!(page["clusterArns"].as_array().unwrap().len(), 3);
    let rest = ok(&app, "ListClusters", json!({"maxResults": 3, "nextToken": page["nextToken"]})).await;
    assert_eq!(rest["clusterArns"].as_array().unwrap().len(), 1);
    assert!(rest.get("nextToken").is_none());
    fails(&app, "ListClusters", json!({"nextToken": "zz"}), "InvalidParameterException").await;

    let out = ok(&app, "DeleteCluster", json!({"cluster": "c"})).await;
    assert_eq!(out["cluster"]["status"], "INACTIVE");
    fails(&app, "DeleteCluster", json!({"cluster": "c"}), "ClusterNotFoundException").await;
    let out = ok(&app, "DescribeClusters", json!({"clusters": ["c"]})).await;
    assert_eq!(out["clusters"][0]["status"], "INACTIVE");
    let list = ok(&app, "ListClusters", json!({})).await;
    assert_eq!(list["clusterArns"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn task_definitions() {
    let (app, _dir) = app();
    let one = ok(&app, "RegisterTaskDefinition", web_def()).await;
    let def = &one["taskDefinition"];
    assert_eq!(def["taskDefinitionArn"], "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1");
    assert_eq!(def["revision"], 1);
    assert_eq!(def["compatibilities"], json!(["EC2", "FARGATE"]));
    let mapping = &def["containerDefinitions"][0]["portMappings"][0];
    assert_eq!((mapping["hostPort"].clone(), mapping["protocol"].clone()), (json!(8080), json!("tcp")));
    assert_eq!(def["containerDefinitions"][0]["essential"], true);
    assert!(def["registeredAt"].is_f64() || def["registeredAt"].is_u64());
    let mut tagged = web_def();
    tagged["tags"] = json!([{"key": "team", "value": "a"}]);
    let two = ok(&app, "RegisterTaskDefinition", tagged).await;
    assert_eq!(two["taskDefinition"]["revision"], 2);
    assert_eq!(two["tags"], json!([{"key": "team", "value": "a"}]));

    let latest = ok(&app, "DescribeTaskDefinition", json!({"taskDefinition": "web", "include": ["TAGS"]})).await;
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    assert_eq!(latest["tags"], json!([{"key": "team", "value": "a"}]));
    let first = ok(&app, "DescribeTaskDefinition", json!({"taskDefinition": "web:1"})).await;
    assert_eq!(first["taskDefinition"]["revision"], 1);
    assert!(first.get("tags").is_none());
    fails(&app, "DescribeTaskDefinition", json!({"taskDefinition": "web:9"}), "ClientException").await;

    let out = ok(&app, "DeregisterTaskDefinition", json!({"taskDefinition": "web:2"})).await;
    assert_eq!(out["taskDefinition"]["status"], "INACTIVE");
    let latest = ok(&app, "DescribeTaskDefinition", json!({"taskDefinition": "web"})).await;
    assert_eq!(latest["taskDefinition"]["revision"], 1);
    // Revisions are never reused.
    let three = ok(&app, "RegisterTaskDefinition", web_def()).await;
    assert_eq!(three["taskDefinition"]["revision"], 3);
    let desc = ok(&app, "ListTaskDefinitions", json!({"sort": "DESC", "maxResults": 1})).await;
    assert_eq!(desc["taskDefinitionArns"], json!(["arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"]));
    let next = ok(&app, "ListTaskDefinitions", json!({"sort": "DESC", "nextToken": desc["nextToken"]})).await;
    assert_eq!(next["taskDefinitionArns"], json!(["arn:aws:ecs:us-east-1:000000000000:task-definition/web:1"]));
    let inactive = ok(&app, "ListTaskDefinitions", json!({"status": "INACTIVE", "familyPrefix": "web"})).await;
    assert_eq!(inactive["taskDefinitionArns"], json!(["arn:aws:ecs:us-east-1:000000000000:task-definition/web:2"]));
}

#[tokio::test]
async fn bad_task_definitions() {
    let (app, _dir) = app();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit); 7] = [
        ("image", |d| d["containerDefinitions"][0].as_object_mut().unwrap().remove("image").map(drop).unwrap()),
        ("Duplicate", |d| {
            let c = d["containerDefinitions"][0].clone();
            d["containerDefinitions"].as_array_mut().unwrap().push(c);
        }),
        ("essential", |d| d["containerDefinitions"][0]["essential"] = json!(false)),
        ("port mapping name", |d| d["containerDefinitions"][0]["portMappings"][0]["name"] = json!("Web!")),
        ("host ports", |d| d["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(80)),
        ("awsvpc", |d| d["networkMode"] = json!("bridge")),
        ("empty", |d| d["containerDefinitions"] = json!([])),
    ];
    for (words, edit) in cases {
        let mut def = web_def();
        edit(&mut def);
        let message = fails(&app, "RegisterTaskDefinition", def, "ClientException").await;
        assert!(message.contains(words), "{words}: {message}");
    }
    // A member of the wrong type names itself.
    let message = fails(&app, "RegisterTaskDefinition", json!({"family": 1}), "InvalidParameterException").await;
    assert!(message.contains("family"), "{message}");
    let (status, out) = ecs(&app, "NoSuchThing", json!({})).await;
    assert_eq!((status.as_u16(), out["__type"].as_str()), (400, Some("UnknownOperationException")));
}

#[tokio::test]
async fn services_with_lattice() {
    let (app, store, _dir) = app_and_store();
    let net = net(&app, "10.0.0.0/16", "web").await;
    let other = net_other(&app).await;
    ok(&app, "CreateCluster", json!({"clusterName": "demo"})).await;
    ok(&app, "RegisterTaskDefinition", web_def()).await;
    let create = |lat: Value, network: Value| {
        json!({"cluster": "demo", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
               "networkConfiguration": network, "vpcLatticeConfigurations": lat})
    };
    // Bad Lattice configurations, each with ECS's exception.
    let unknown_tg = json!([{"roleArn": "arn:aws:iam::000000000000:role/ecsInfrastructureRoleForVpcLattice",
        "targetGroupArn": "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/tg-0123456789abcdef0", "portName": "web-8080"}]);
    let m = fails(&app, "CreateService", create(unknown_tg, network(&net)), "InvalidParameterException").await;
    assert!(m.contains("does not exist"), "{m}");
    let m =
        fails(&app, "CreateService", create(lattice(&other, "web-8080"), network(&net)), "InvalidParameterException")
            .await;
    assert!(m.contains("not in the VPC"), "{m}");
    let m =
        fails(&app, "CreateService", create(lattice(&net, "nope"), network(&net)), "InvalidParameterException").await;
    assert!(m.contains("portName"), "{m}");
    let mut bad_role = lattice(&net, "web-8080");
    bad_role[0]["roleArn"] = json!("arn:aws:iam::000000000000:user/bob");
    fails(&app, "CreateService", create(bad_role.clone(), network(&net)), "InvalidParameterException").await;
    // The role must exist, trust ECS, and allow it to manage targets.
    bad_role[0]["roleArn"] = json!("arn:aws:iam::000000000000:role/nobody");
    let m = fails(&app, "CreateService", create(bad_role.clone(), network(&net)), "InvalidParameterException").await;
    assert!(m.contains("Unable to assume"), "{m}");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let (s, body) =
        iam(&app, &[("Action", "CreateRole"), ("RoleName", "bare"), ("AssumeRolePolicyDocument", trust)]).await;
    assert_eq!(s, 200, "{body}");
    bad_role[0]["roleArn"] = json!("arn:aws:iam::000000000000:role/bare");
    let m = fails(&app, "CreateService", create(bad_role, network(&net)), "InvalidParameterException").await;
    assert!(m.contains("AmazonECSInfrastructureRolePolicyForVpcLattice"), "{m}");
    let m = fails(&app, "CreateService", create(json!([]), json!(null)), "InvalidParameterException").await;
    assert!(m.contains("Network Configuration must be provided"), "{m}");
    let mixed = json!({"awsvpcConfiguration": {"subnets": [net.subnet, other.subnet]}});
    fails(&app, "CreateService", create(json!([]), mixed), "InvalidParameterException").await;
    let missing = json!({"awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"]}});
    let m = fails(&app, "CreateService", create(json!([]), missing), "InvalidParameterException").await;
    assert!(m.contains("InvalidSubnetID.NotFound"), "{m}");

    let out = ok(&app, "CreateService", create(lattice(&net, "web-8080"), network(&net))).await;
    let svc = &out["service"];
    assert_eq!(svc["serviceArn"], "arn:aws:ecs:us-east-1:000000000000:service/demo/web");
    assert_eq!(svc["deployments"].as_array().unwrap().len(), 1);
    let primary = &svc["deployments"][0];
    assert_eq!((primary["status"].clone(), primary["rolloutState"].clone()), (json!("PRIMARY"), json!("IN_PROGRESS")));
    let id = primary["id"].as_str().unwrap();
    assert!(id.starts_with("ecs-svc/") && id.len() == 27 && id[8..].bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert_eq!(primary["vpcLatticeConfigurations"], lattice(&net, "web-8080"));
    assert_eq!(svc["deploymentConfiguration"]["maximumPercent"], 200);
    fails(&app, "CreateService", create(json!([]), network(&net)), "InvalidParameterException").await;

    // desiredCount alone updates the primary; a new task definition makes a new deployment.
    let out = ok(&app, "UpdateService", json!({"cluster": "demo", "service": "web", "desiredCount": 3})).await;
    assert_eq!(out["service"]["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(out["service"]["deployments"][0]["desiredCount"], 3);
    ok(&app, "RegisterTaskDefinition", web_def()).await;
    let out = ok(&app, "UpdateService", json!({"cluster": "demo", "service": "web", "taskDefinition": "web"})).await;
    let deployments = out["service"]["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    assert_eq!(
        (deployments[0]["status"].clone(), deployments[1]["status"].clone()),
        (json!("PRIMARY"), json!("ACTIVE"))
    );
    assert_eq!(deployments[0]["taskDefinition"], "arn:aws:ecs:us-east-1:000000000000:task-definition/web:2");
    assert_eq!(deployments[0]["vpcLatticeConfigurations"], lattice(&net, "web-8080"));

    // The scheduler's view, and counts computed from task records.
    let state = runtime::load(store.as_ref()).await.unwrap();
    let (scope, service) = &state.services[0];
    assert_eq!(service.service_name, "web");
    let def = &state.task_definitions[&service.task_definition];
    let primary = service.primary().unwrap();
    let cluster_arn = service.cluster_arn.clone();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            runtime::new_task(
                scope,
                &cluster_arn,
                def,
                "service:web",
                Some(&primary.id),
                primary.network_configuration.as_ref(),
            )
        })
        .collect();
    runtime::create_tasks(store.as_ref(), scope, &tasks).await.unwrap();
    let running = runtime::update_task(store.as_ref(), &tasks[0].task_arn, |t| {
        t.last_status = status::RUNNING.into();
        true
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(running.version, 2);
    let out = ok(&app, "DescribeServices", json!({"cluster": "demo", "services": ["web", "gone"]})).await;
    let svc = &out["services"][0];
    assert_eq!((svc["runningCount"].clone(), svc["pendingCount"].clone()), (json!(1), json!(1)));
    assert_eq!(svc["deployments"][0]["runningCount"], 1);
    assert_eq!(svc["deployments"][1]["runningCount"], 0);
    assert_eq!(out["failures"][0]["reason"], "MISSING");
    let out = ok(&app, "DescribeClusters", json!({"clusters": ["demo"]})).await;
    let c = &out["clusters"][0];
    assert_eq!(
        (c["runningTasksCount"].clone(), c["pendingTasksCount"].clone(), c["activeServicesCount"].clone()),
        (json!(1), json!(1), json!(1))
    );
    assert_eq!(runtime::load(store.as_ref()).await.unwrap().tasks.len(), 2);

    // Delete: desiredCount 0 first, unless forced; then DRAINING.
    fails(&app, "DeleteCluster", json!({"cluster": "demo"}), "ClusterContainsServicesException").await;
    fails(&app, "DeleteService", json!({"cluster": "demo", "service": "web"}), "InvalidParameterException").await;
    let out = ok(&app, "DeleteService", json!({"cluster": "demo", "service": "web", "force": true})).await;
    assert_eq!(
        (out["service"]["status"].clone(), out["service"]["desiredCount"].clone()),
        (json!("DRAINING"), json!(0))
    );
    fails(
        &app,
        "UpdateService",
        json!({"cluster": "demo", "service": "web", "desiredCount": 1}),
        "ServiceNotActiveException",
    )
    .await;
    fails(&app, "UpdateService", json!({"cluster": "demo", "service": "nope"}), "ServiceNotFoundException").await;
    runtime::update_service(store.as_ref(), &service.service_arn, |s| {
        s.status = status::INACTIVE.into();
        true
    })
    .await
    .unwrap();
    fails(&app, "DeleteCluster", json!({"cluster": "demo"}), "ClusterContainsTasksException").await;
    for t in &tasks {
        runtime::delete_task(store.as_ref(), &t.task_arn).await.unwrap();
    }
    ok(&app, "DeleteCluster", json!({"cluster": "demo"})).await;
}

/// A second VPC with its own target group.
async fn net_other(app: &Router) -> Net {
    net(app, "10.9.0.0/16", "other").await
}

#[tokio::test]
async fn tasks() {
    let (app, _dir) = app();
    let net = net(&app, "10.0.0.0/16", "web").await;
    ok(&app, "CreateCluster", json!({})).await;
    ok(&app, "RegisterTaskDefinition", web_def()).await;
    fails(&app, "RunTask", json!({"taskDefinition": "web"}), "InvalidParameterException").await;
    fails(&app, "RunTask", json!({"taskDefinition": "nope", "networkConfiguration": network(&net)}), "ClientException")
        .await;
    let out = ok(
        &app,
        "RunTask",
        json!({"taskDefinition": "web", "count": 2, "networkConfiguration": network(&net), "startedBy": "me",
               "tags": [{"key": "k", "value": "v"}]}),
    )
    .await;
    let tasks = out["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    let task = &tasks[0];
    let arn = task["taskArn"].as_str().unwrap();
    let id = arn.rsplit('/').next().unwrap();
    assert!(arn.starts_with("arn:aws:ecs:us-east-1:000000000000:task/default/") && id.len() == 32, "{arn}");
    assert_eq!(
        (task["lastStatus"].clone(), task["desiredStatus"].clone(), task["group"].clone(), task["version"].clone()),
        (json!("PROVISIONING"), json!("RUNNING"), json!("family:web"), json!(1))
    );
    assert_eq!(task["containers"][0]["lastStatus"], "PENDING");
    assert!(task["containers"][0]["containerArn"].as_str().unwrap().contains(&format!(":container/default/{id}/")));
    assert_eq!(task["attachments"][0]["details"][0], json!({"name": "subnetId", "value": net.subnet}));
    assert_eq!(task["availabilityZone"], "us-east-1a");
    let _ = &net.vpc;

    let out = ok(&app, "DescribeTasks", json!({"tasks": [id, "0123"], "include": ["TAGS"]})).await;
    assert_eq!(out["tasks"][0]["taskArn"], arn);
    assert_eq!(out["tasks"][0]["tags"], json!([{"key": "k", "value": "v"}]));
    assert_eq!(out["failures"][0]["arn"], "arn:aws:ecs:us-east-1:000000000000:task/default/0123");
    let page = ok(&app, "ListTasks", json!({"maxResults": 1, "startedBy": "me"})).await;
    assert_eq!(page["taskArns"].as_array().unwrap().len(), 1);
    let rest = ok(&app, "ListTasks", json!({"nextToken": page["nextToken"], "family": "web"})).await;
    assert_eq!(rest["taskArns"].as_array().unwrap().len(), 1);

    let out = ok(&app, "StopTask", json!({"task": arn})).await;
    let t = &out["task"];
    assert_eq!(
        (t["desiredStatus"].clone(), t["stopCode"].clone(), t["stoppedReason"].clone(), t["version"].clone()),
        (json!("STOPPED"), json!("UserInitiated"), json!("Task stopped by user"), json!(2))
    );
    assert!(t["stoppingAt"].is_number());
    fails(&app, "StopTask", json!({"task": "0123"}), "InvalidParameterException").await;
    let stopped = ok(&app, "ListTasks", json!({"desiredStatus": "STOPPED"})).await;
    assert_eq!(stopped["taskArns"], json!([arn]));
    let running = ok(&app, "ListTasks", json!({})).await;
    assert_eq!(running["taskArns"].as_array().unwrap().len(), 1);
    fails(&app, "DeleteCluster", json!({"cluster": "default"}), "ClusterContainsTasksException").await;
}

#[tokio::test]
async fn tags() {
    let (app, _dir) = app();
    let cluster = ok(&app, "CreateCluster", json!({"clusterName": "t"})).await["cluster"]["clusterArn"].clone();
    let def = ok(&app, "RegisterTaskDefinition", web_def()).await["taskDefinition"]["taskDefinitionArn"].clone();
    for arn in [&cluster, &def] {
        ok(
            &app,
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]}),
        )
        .await;
        ok(&app, "UntagResource", json!({"resourceArn": arn, "tagKeys": ["a"]})).await;
        let out = ok(&app, "ListTagsForResource", json!({"resourceArn": arn})).await;
        assert_eq!(out["tags"], json!([{"key": "b", "value": "2"}]), "{arn}");
    }
    let gone = "arn:aws:ecs:us-east-1:000000000000:cluster/gone";
    fails(&app, "ListTagsForResource", json!({"resourceArn": gone}), "ClusterNotFoundException").await;
    let gone = "arn:aws:ecs:us-east-1:000000000000:service/t/gone";
    fails(&app, "TagResource", json!({"resourceArn": gone, "tags": []}), "ResourceNotFoundException").await;
    fails(&app, "ListTagsForResource", json!({"resourceArn": "nope"}), "InvalidParameterException").await;
}

#[test]
fn operations_parse_by_their_aws_names() {
    assert_eq!(super::Operation::parse("RunTask"), Some(super::Operation::RunTask));
    assert_eq!(super::Operation::parse("runTask"), None);
    assert_eq!(super::Operation::ALL.len(), 20);
}
