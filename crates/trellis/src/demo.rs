//! `trellis demo`: the seed's experiment in one command. A server of its own (a temporary data
//! directory, so its own name prefix, ingress and task ranges, and an API port the system picks)
//! runs in this process; the demo then drives it only through the AWS APIs, as a user would:
//!
//! 1. VPC-A and VPC-B (overlapping blocks) and VPC-C, a subnet each;
//! 2. the ECS infrastructure role, trusted by `ecs.amazonaws.com`, with the managed policy
//!    `AmazonECSInfrastructureRolePolicyForVpcLattice` attached;
//! 3. a service network associated with VPC-A and VPC-B; an IP target group in VPC-A; a Lattice
//!    service with an HTTP:80 listener (`--https`: HTTPS:443, its certificate from the
//!    installation's CA) forwarding to it; the service's association;
//! 4. an ECS cluster, a task definition of the sample app, and a service of two tasks in VPC-A
//!    with the Lattice configuration (the tasks register themselves as they start);
//! 5. once both targets are healthy: from VPC-B, the service's generated name is resolved with
//!    VPC-B's resolver and the page fetched (netns mode: from an instance inside VPC-B; loopback
//!    mode: at VPC-B's ingress address; `--https`: over TLS, verified with the Trellis CA); VPC-C cannot resolve it (netns mode: its resolver does
//!    not answer for it; loopback mode: it has no ingress at all);
//! 6. the equivalent `aws` commands are printed, and everything is removed (`--keep` leaves the
//!    server running until Ctrl-C).
//!
//! Exits non-zero if any check fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use trellis_net::{Network, Place};

use crate::client::Client;
use crate::config::RawConfig;
use crate::fetch::{self, Resolved};

/// How long the demo waits for its tasks to be healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// What the demo's service looks like.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// An HTTPS:443 listener instead of HTTP:80.
    pub https: bool,
    /// `authType: AWS_IAM` with a policy that lets in requests from VPC-B only.
    pub auth: bool,
}

/// The CloudWatch Logs group the demo's access logs go to.
const DEMO_LOG_GROUP: &str = "demo-network-access";

/// What the demo made, for the checks and the `aws` commands it prints.
#[derive(Default)]
struct Made {
    ids: BTreeMap<&'static str, String>,
}

/// Runs the demo in `network` mode (default: netns as root, else loopback); `keep` leaves the
/// server running afterwards.
pub async fn run(keep: bool, network: Option<String>, options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("trellis-demo-{}", std::process::id()));
    let result = run_in(&dir, keep, network, options, started).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &std::path::Path,
    keep: bool,
    network: Option<String>,
    options: Options,
    started: Instant,
) -> anyhow::Result<()> {
    let say = |what: &str| println!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let mut raw: RawConfig = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nrelaxed_health_checks = true\nlog_format = \"text\"\n\
         [proxy]\nderegistration_delay_seconds = 5\n",
        dir.join("data").display()
    ))?;
    raw.network = network;
    let config = raw.validate(&crate::config::ProcessEnv)?;
    let network = config.network.clone();
    let naming = config.naming.clone();
    let bound = crate::app::build(config).await.context("starting the demo's server")?;
    let endpoint = format!("http://{}", bound.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.wait_termination(async move {
        let _ = stopped.await;
    }));
    let mode = if matches!(network, Network::Netns(_)) { "netns: every VPC a network namespace" } else { "loopback" };
    say(&format!("Trellis serving the AWS APIs at {endpoint} ({mode})"));

    let outcome = scenario(&Client::new(&endpoint)?, &network, options, &say).await;
    match &outcome {
        Ok(made) => print_aws_commands(made, &endpoint, options),
        Err(e) => println!("\nFAILED: {e:#}"),
    }
    if keep && outcome.is_ok() {
        println!("\nLeft running at {endpoint} (data in {}); Ctrl-C to stop and remove it.", dir.display());
        println!(
            "The console: {endpoint}{} (sign in with the token in {})",
            crate::console::PATH,
            dir.join("data").join(crate::app::TOKEN_FILE).display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    say("cleaning up");
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => println!("the server stopped with an error: {e:#}"),
        _ => println!("the server did not stop in time"),
    }
    if matches!(network, Network::Netns(_)) {
        let netns = trellis_net::Netns::new(naming);
        for name in netns.existing().unwrap_or_default() {
            let _ = netns.remove(&name);
        }
    }
    say(if outcome.is_ok() { "done: every check passed" } else { "done: a check failed" });
    outcome.map(|_| ())
}

/// The scenario itself.
async fn scenario(api: &Client, network: &Network, options: Options, say: &dyn Fn(&str)) -> anyhow::Result<Made> {
    let https = options.https;
    let (protocol, port, scheme) = if https { ("HTTPS", 443, "https") } else { ("HTTP", 80, "http") };
    let mut made = Made::default();
    // 1. Networks.
    let vpc = |cidr: &'static str, subnet: &'static str, name: &'static str| async move {
        let xml = api
            .form(&[
                ("Action", "CreateVpc"),
                ("Version", "2016-11-15"),
                ("CidrBlock", cidr),
                // Named as the demo calls them, so that the console and describe-vpcs say so too.
                ("TagSpecification.1.ResourceType", "vpc"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", name),
            ])
            .await?;
        let vpc = field(&xml, "vpcId")?;
        let xml = api
            .form(&[("Action", "CreateSubnet"), ("Version", "2016-11-15"), ("VpcId", &vpc), ("CidrBlock", subnet)])
            .await?;
        let sn = field(&xml, "subnetId")?;
        say(&format!("created {name} {vpc} ({cidr}) with subnet {sn} ({subnet})"));
        anyhow::Ok((vpc, sn))
    };
    let (vpc_a, subnet_a) = vpc("10.0.0.0/16", "10.0.1.0/24", "VPC-A").await?;
    let (vpc_b, subnet_b) = vpc("10.0.0.0/16", "10.0.1.0/24", "VPC-B").await?;
    let (vpc_c, subnet_c) = vpc("10.1.0.0/16", "10.1.1.0/24", "VPC-C").await?;
    let xml = api
        .form(&[
            ("Action", "DescribeSecurityGroups"),
            ("Version", "2016-11-15"),
            ("Filter.1.Name", "vpc-id"),
            ("Filter.1.Value.1", &vpc_a),
        ])
        .await?;
    let sg_a = field(&xml, "groupId")?;

    // 2. The infrastructure role, as the seed's author made it.
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let xml = api
        .form(&[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", "ecsInfrastructureRoleForVpcLattice"),
            ("AssumeRolePolicyDocument", &trust.to_string()),
        ])
        .await?;
    let role = field(&xml, "Arn")?;
    api.form(&[
        ("Action", "AttachRolePolicy"),
        ("Version", "2010-05-08"),
        ("RoleName", "ecsInfrastructureRoleForVpcLattice"),
        ("PolicyArn", "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice"),
    ])
    .await?;
    say(&format!("created the ECS infrastructure role {role} with AmazonECSInfrastructureRolePolicyForVpcLattice"));

    // 3. Lattice.
    let sn = api.call("POST", "/servicenetworks", Some(json!({"name": "demo-network"}))).await?;
    let sn_id = text(&sn, "id")?;
    for v in [&vpc_a, &vpc_b] {
        api.call(
            "POST",
            "/servicenetworkvpcassociations",
            Some(json!({"serviceNetworkIdentifier": sn_id, "vpcIdentifier": v})),
        )
        .await?;
    }
    say(&format!("created service network {sn_id}, associated with VPC-A and VPC-B (not VPC-C)"));
    // Its access logs go to a CloudWatch Logs group (files under the data directory, served by
    // `aws logs` and the console's tail).
    let sn_arn = text(&sn, "arn")?;
    let mut arn = sn_arn.split(':');
    let (region, account) = (arn.nth(3).unwrap_or("us-east-1"), arn.next().unwrap_or("000000000000"));
    let log_group = format!("arn:aws:logs:{region}:{account}:log-group:{DEMO_LOG_GROUP}");
    api.call(
        "POST",
        "/accesslogsubscriptions",
        Some(json!({"resourceIdentifier": sn_id, "destinationArn": log_group})),
    )
    .await?;
    say(&format!("subscribed its access logs to the CloudWatch Logs group {DEMO_LOG_GROUP}"));
    let tg = api
        .call(
            "POST",
            "/targetgroups",
            Some(json!({"name": "demo-web", "type": "IP", "config": {"port": 80, "protocol": "HTTP",
                "vpcIdentifier": vpc_a, "healthCheck": {"enabled": true, "path": "/", "healthCheckIntervalSeconds": 1, "healthCheckTimeoutSeconds": 1,
                "healthyThresholdCount": 2, "unhealthyThresholdCount": 2}}})),
        )
        .await?;
    let (tg_id, tg_arn) = (text(&tg, "id")?, text(&tg, "arn")?);
    let auth_type = if options.auth { "AWS_IAM" } else { "NONE" };
    let svc = api.call("POST", "/services", Some(json!({"name": "demo-web", "authType": auth_type}))).await?;
    let svc_id = text(&svc, "id")?;
    let dns = svc["dnsEntry"]["domainName"].as_str().context("the service has no DNS name")?.to_owned();
    api.call(
        "POST",
        &format!("/services/{svc_id}/listeners"),
        Some(json!({"name": scheme, "protocol": protocol, "port": port,
            "defaultAction": {"forward": {"targetGroups": [{"targetGroupIdentifier": tg_id}]}}})),
    )
    .await?;
    api.call(
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": svc_id, "serviceNetworkIdentifier": sn_id})),
    )
    .await?;
    say(&format!("created Lattice service {svc_id} ({dns}), {protocol} :{port} → target group {tg_id}"));
    if options.auth {
        api.call("PUT", &format!("/authpolicy/{svc_id}"), Some(json!({"policy": vpc_b_only(&vpc_b)}))).await?;
        say(&format!("its authType is AWS_IAM, with an auth policy that allows requests from {vpc_b} only"));
    }

    // 4. ECS.
    const ECS: &str = "AmazonEC2ContainerServiceV20141113";
    api.json11(&format!("{ECS}.CreateCluster"), json!({"clusterName": "demo"})).await?;
    api.json11(
        &format!("{ECS}.RegisterTaskDefinition"),
        json!({"family": "demo-web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "web", "image": "public.ecr.aws/ecs-sample-image/amazon-ecs-sample:latest",
                "essential": true, "portMappings": [{"containerPort": 80, "protocol": "tcp", "name": "web-80"}]}]}),
    )
    .await?;
    api.json11(
        &format!("{ECS}.CreateService"),
        json!({"cluster": "demo", "serviceName": "web", "taskDefinition": "demo-web", "desiredCount": 2,
            "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet_a], "securityGroups": [sg_a],
                "assignPublicIp": "DISABLED"}},
            "vpcLatticeConfigurations": [{"roleArn": role, "targetGroupArn": tg_arn, "portName": "web-80"}]}),
    )
    .await?;
    say("created ECS cluster demo, task definition demo-web (the sample app) and service web: 2 tasks in VPC-A");

    // Both tasks registered and healthy.
    let deadline = Instant::now() + HEALTHY_WITHIN;
    let mut last = String::new();
    loop {
        let listed = api.call("POST", &format!("/targetgroups/{tg_id}/listtargets"), Some(json!({}))).await?;
        let items = listed["items"].as_array().cloned().unwrap_or_default();
        let statuses: Vec<String> = items
            .iter()
            .map(|t| {
                format!("{}:{} {}", t["id"].as_str().unwrap_or("?"), t["port"], t["status"].as_str().unwrap_or("?"))
            })
            .collect();
        let healthy = items.iter().filter(|t| t["status"] == "HEALTHY").count();
        let now = format!("targets: {}", if statuses.is_empty() { "none yet".into() } else { statuses.join(", ") });
        if now != last {
            say(&now);
            last = now;
        }
        if healthy >= 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the tasks' targets were not healthy within {HEALTHY_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 5. From VPC-B, and from VPC-C.
    let from_b = Vantage::new(api, network, &vpc_b, &subnet_b).await?;
    let (resolver, place) = from_b.resolver.clone().context("VPC-B has no resolver")?;
    let addr = match fetch::resolve(&place, resolver, &dns, Duration::from_secs(2)).await? {
        Resolved::Address(a) if !a.is_empty() => a[0],
        other => bail!("VPC-B could not resolve {dns}: {other:?}"),
    };
    say(&format!("from VPC-B, {dns} resolves to {addr}"));
    let real_port = from_b.real_port(port);
    let tls = if https {
        let pem = api.text("GET", "/_trellis/ca").await.context("fetching the Trellis CA")?;
        Some(fetch::trusting(&pem)?)
    } else {
        None
    };
    let at = SocketAddr::new(addr, real_port);
    let (status, page) = fetch::get(&place, at, &dns, "/", tls, Duration::from_secs(5)).await?;
    if status != 200 || !page.contains("Trellis sample app") {
        bail!("VPC-B got {status} from {dns}: {page}");
    }
    let verified = if https { " (certificate verified with the Trellis CA)" } else { "" };
    say(&format!("from VPC-B, GET {scheme}://{dns}/ → {status}{verified}:"));
    for line in page.lines().filter(|l| !l.trim().is_empty()) {
        println!("          {line}");
    }
    // The request is in the access log once the writer's batch is flushed (within moments).
    let mut logged = 0;
    for _ in 0..50 {
        let tail = api.text("GET", &format!("/_trellis/access-logs?service={svc_id}&limit=10")).await?;
        logged = tail.lines().filter(|l| !l.trim().is_empty()).count();
        if logged > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if logged == 0 {
        bail!("the request from VPC-B is not in the access log");
    }
    say(&format!("the access log has it (aws logs filter-log-events --log-group-name {DEMO_LOG_GROUP})"));
    let from_c = Vantage::new(api, network, &vpc_c, &subnet_c).await?;
    match &from_c.resolver {
        Some((resolver, place)) => match fetch::resolve(place, *resolver, &dns, Duration::from_secs(1)).await? {
            Resolved::Address(a) if !a.is_empty() => bail!("VPC-C resolved {dns} to {a:?}; it must not"),
            other => say(&format!("from VPC-C, {dns} does not resolve ({})", describe(&other))),
        },
        None => say("VPC-C has no way to Lattice at all: it is not associated with the service network"),
    }
    if options.auth {
        // VPC-A reaches the service too, and the policy turns it away.
        let from_a = Vantage::new(api, network, &vpc_a, &subnet_a).await?;
        let (resolver, place) = from_a.resolver.clone().context("VPC-A has no resolver")?;
        let addr = match fetch::resolve(&place, resolver, &dns, Duration::from_secs(2)).await? {
            Resolved::Address(a) if !a.is_empty() => a[0],
            other => bail!("VPC-A could not resolve {dns}: {other:?}"),
        };
        let tls = if https { Some(fetch::trusting(&api.text("GET", "/_trellis/ca").await?)?) } else { None };
        let at = SocketAddr::new(addr, from_a.real_port(port));
        let (status, body) = fetch::get(&place, at, &dns, "/", tls, Duration::from_secs(5)).await?;
        if status != 403 {
            bail!("VPC-A got {status} from {dns}; the auth policy must deny it");
        }
        say(&format!("from VPC-A, GET {scheme}://{dns}/ → {status}: {}", body.trim()));
        from_a.close(api).await;
    }
    from_b.close(api).await;
    from_c.close(api).await;
    made.ids = BTreeMap::from([
        ("vpc_a", vpc_a),
        ("vpc_b", vpc_b),
        ("subnet_a", subnet_a),
        ("subnet_b", subnet_b),
        ("sg_a", sg_a),
        ("role", role),
        ("sn", sn_id),
        ("svc", svc_id),
        ("tg", tg_id),
        ("tg_arn", tg_arn),
        ("dns", dns),
    ]);
    Ok(made)
}

/// Where a client of one VPC stands: its resolver (and the place sockets open from), and the
/// offset of Lattice ports below 1024.
struct Vantage {
    resolver: Option<(SocketAddr, Place)>,
    low_port_offset: u16,
    instance: Option<String>,
}

impl Vantage {
    /// netns mode: an instance in `vpc` (on `subnet`), asking the VPC's resolver. Loopback mode:
    /// the VPC's ingress address, if it has one.
    async fn new(api: &Client, network: &Network, vpc: &str, subnet: &str) -> anyhow::Result<Self> {
        if matches!(network, Network::Netns(_)) {
            let body = json!({"subnetId": subnet, "ownerPid": std::process::id()});
            let instance = api.call("POST", &format!("/_trellis/vpcs/{vpc}/instances"), Some(body)).await?;
            let dns: IpAddr = text(&instance, "dns")?.parse()?;
            let place = Place::netns(&text(&instance, "netns")?);
            return Ok(Self {
                resolver: Some((SocketAddr::new(dns, 53), place)),
                low_port_offset: 0,
                instance: Some(text(&instance, "instanceId")?),
            });
        }
        match api.call("GET", &format!("/_trellis/vpcs/{vpc}/ingress"), None).await {
            Ok(ingress) => {
                let ip: IpAddr = text(&ingress, "address")?.parse()?;
                let dns_port = u16::try_from(ingress["dnsPort"].as_u64().unwrap_or(53))?;
                let offset = u16::try_from(ingress["lowPortOffset"].as_u64().unwrap_or(0))?;
                Ok(Self {
                    resolver: Some((SocketAddr::new(ip, dns_port), Place::Host)),
                    low_port_offset: offset,
                    instance: None,
                })
            }
            Err(_) => Ok(Self { resolver: None, low_port_offset: 0, instance: None }),
        }
    }

    /// Where Lattice port `port` is served.
    fn real_port(&self, port: u16) -> u16 {
        if port < 1024 { port + self.low_port_offset } else { port }
    }

    async fn close(self, api: &Client) {
        if let Some(id) = self.instance {
            let _ = api.call("DELETE", &format!("/_trellis/instances/{id}"), None).await;
        }
    }
}

fn describe(r: &Resolved) -> String {
    match r {
        Resolved::Address(_) => "no address".into(),
        Resolved::Refused(code) => format!("the resolver answers {code}"),
        Resolved::Silent => "nothing answers for it there".into(),
    }
}

/// The `aws` commands that make the same setup.
/// The demo's auth policy: requests from `vpc` only.
fn vpc_b_only(vpc: &str) -> String {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
        "Action": "vpc-lattice-svcs:Invoke", "Resource": "*",
        "Condition": {"StringEquals": {"vpc-lattice-svcs:SourceVpc": vpc}}}]})
    .to_string()
}

fn print_aws_commands(made: &Made, endpoint: &str, options: Options) {
    let https = options.https;
    let id = |k: &str| made.ids.get(k).map_or("…", String::as_str);
    let (protocol, port, scheme) = if https { ("HTTPS", 443, "https") } else { ("HTTP", 80, "http") };
    println!("\nThe same with the aws CLI (AWS_ENDPOINT_URL={endpoint}):");
    let lines = [
        "aws ec2 create-vpc --cidr-block 10.0.0.0/16 \\\n    --tag-specifications 'ResourceType=vpc,Tags=[{Key=Name,Value=VPC-A}]'   # and VPC-B, VPC-C alike".to_owned(),
        format!("aws ec2 create-subnet --vpc-id {} --cidr-block 10.0.1.0/24", id("vpc_a")),
        format!("aws ec2 create-subnet --vpc-id {} --cidr-block 10.0.1.0/24", id("vpc_b")),
        "aws iam create-role --role-name ecsInfrastructureRoleForVpcLattice \\\n    --assume-role-policy-document \
         '{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"ecs.amazonaws.com\"},\"Action\":\"sts:AssumeRole\"}]}'"
            .to_owned(),
        "aws iam attach-role-policy --role-name ecsInfrastructureRoleForVpcLattice \\\n    --policy-arn \
         arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice"
            .to_owned(),
        "aws vpc-lattice create-service-network --name demo-network".to_owned(),
        format!(
            "aws vpc-lattice create-service-network-vpc-association --service-network-identifier {} --vpc-identifier {}",
            id("sn"),
            id("vpc_a")
        ),
        format!(
            "aws vpc-lattice create-service-network-vpc-association --service-network-identifier {} --vpc-identifier {}",
            id("sn"),
            id("vpc_b")
        ),
        format!(
            "aws vpc-lattice create-access-log-subscription --resource-identifier {} \\\n    \
             --destination-arn arn:aws:logs:us-east-1:000000000000:log-group:{DEMO_LOG_GROUP}",
            id("sn")
        ),
        format!(
            "aws vpc-lattice create-target-group --name demo-web --type IP \\\n    --config \
             '{{\"port\":80,\"protocol\":\"HTTP\",\"vpcIdentifier\":\"{}\"}}'",
            id("vpc_a")
        ),
        if options.auth {
            format!(
                "aws vpc-lattice create-service --name demo-web --auth-type AWS_IAM\n  \
                 aws vpc-lattice put-auth-policy --resource-identifier {} --policy '{}'",
                id("svc"),
                vpc_b_only(id("vpc_b"))
            )
        } else {
            "aws vpc-lattice create-service --name demo-web".to_owned()
        },
        format!(
            "aws vpc-lattice create-listener --service-identifier {} --name {scheme} --protocol {protocol} --port {port} \\\n    \
             --default-action '{{\"forward\":{{\"targetGroups\":[{{\"targetGroupIdentifier\":\"{}\"}}]}}}}'",
            id("svc"),
            id("tg")
        ),
        format!(
            "aws vpc-lattice create-service-network-service-association --service-identifier {} \
             --service-network-identifier {}",
            id("svc"),
            id("sn")
        ),
        "aws ecs create-cluster --cluster-name demo".to_owned(),
        "aws ecs register-task-definition --family demo-web --network-mode awsvpc --requires-compatibilities FARGATE \\\n    \
         --cpu 256 --memory 512 --container-definitions \\\n    \
         '[{\"name\":\"web\",\"image\":\"public.ecr.aws/ecs-sample-image/amazon-ecs-sample:latest\",\"portMappings\":[{\"containerPort\":80,\"name\":\"web-80\"}]}]'"
            .to_owned(),
        format!(
            "aws ecs create-service --cluster demo --service-name web --task-definition demo-web --desired-count 2 \
             --launch-type FARGATE \\\n    --network-configuration \
             'awsvpcConfiguration={{subnets=[{}],securityGroups=[{}]}}' \\\n    --vpc-lattice-configurations \
             roleArn={},targetGroupArn={},portName=web-80",
            id("subnet_a"),
            id("sg_a"),
            id("role"),
            id("tg_arn")
        ),
        format!("trellis vpc exec {} -- curl {scheme}://{}/", id("vpc_b"), id("dns")),
        format!("aws logs filter-log-events --log-group-name {DEMO_LOG_GROUP}"),
    ];
    for line in lines {
        println!("  {line}");
    }
}

/// The text of the first `<tag>` element of `xml`.
fn field(xml: &str, tag: &str) -> anyhow::Result<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open).with_context(|| format!("no <{tag}> in the answer: {xml}"))? + open.len();
    let end = xml[start..].find('<').context("unterminated element")?;
    Ok(xml[start..start + end].to_owned())
}

/// A string member of a JSON answer.
fn text(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name].as_str().map(str::to_owned).with_context(|| format!("no {name} in {v}"))
}
