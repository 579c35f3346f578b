"""ECS (JSON 1.1) through boto3's `ecs` client and the aws CLI: clusters, task definitions,
services with vpcLatticeConfigurations, tasks, tags, paging and errors as ECS gives them.

Only the control plane: tasks stay PROVISIONING unless the scheduler of the server under test
moves them, so nothing here waits for a task to run."""

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest

from support import ACCOUNT, REGION, make_client, raises, uname
from test_cli_scenario import find_aws

ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecsInfrastructureRoleForVpcLattice"


def arn(resource):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:{resource}"


def web_def(family, **kw):
    d = {
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "web",
            # A built-in image: the server under test runs its tasks for real.
            "image": "trellis/echo:latest",
            "portMappings": [{"containerPort": 8080, "name": "web-8080", "protocol": "tcp"}],
            "environment": [{"name": "A", "value": "1"}],
        }],
    }
    d.update(kw)
    return d


TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"Service": "ecs.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@pytest.fixture(scope="session")
def infra_role(endpoint):
    """The ECS infrastructure role (ROLE), with the managed policy for VPC Lattice attached."""
    iam = make_client("iam", endpoint)
    try:
        iam.create_role(RoleName="ecsInfrastructureRoleForVpcLattice", AssumeRolePolicyDocument=TRUST)
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    iam.attach_role_policy(RoleName="ecsInfrastructureRoleForVpcLattice",
                           PolicyArn="arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice")
    return ROLE


@pytest.fixture
def net(res, infra_role):
    """A VPC with a subnet and a security group, and an IP target group in it (and the ECS
    infrastructure role)."""
    vpc = res.vpc("10.20.0.0/16")
    subnet = res.subnet(vpc, "10.20.1.0/24")
    sg = res.sg(vpc)
    tg = res.tg(vpc=vpc)
    return {"vpc": vpc, "subnet": subnet, "sg": sg, "tg": tg["arn"],
            "network": {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}}}


@pytest.fixture
def cluster(ecs):
    name = uname("cl")
    ecs.create_cluster(clusterName=name)
    return name


@pytest.fixture
def family(ecs):
    name = uname("fam")
    ecs.register_task_definition(**web_def(name))
    return name


def lattice_config(tg, port_name="web-8080"):
    return [{"roleArn": ROLE, "targetGroupArn": tg, "portName": port_name}]


# ---- clusters


def test_cluster_lifecycle(ecs):
    name = uname("cl")
    c = ecs.create_cluster(clusterName=name, tags=[{"key": "team", "value": "a"}])["cluster"]
    assert c["clusterArn"] == arn(f"cluster/{name}")
    assert c["status"] == "ACTIVE"
    assert (c["runningTasksCount"], c["pendingTasksCount"], c["activeServicesCount"]) == (0, 0, 0)
    assert ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"] == c["clusterArn"]  # idempotent

    out = ecs.describe_clusters(clusters=[name, "nope-" + name], include=["TAGS"])
    assert [x["clusterName"] for x in out["clusters"]] == [name]
    assert out["clusters"][0]["tags"] == [{"key": "team", "value": "a"}]
    assert out["failures"] == [{"arn": arn(f"cluster/nope-{name}"), "reason": "MISSING"}]
    assert c["clusterArn"] in ecs.list_clusters(maxResults=100)["clusterArns"] or any(
        c["clusterArn"] in page["clusterArns"] for page in ecs.get_paginator("list_clusters").paginate())

    d = ecs.delete_cluster(cluster=name)["cluster"]
    assert d["status"] == "INACTIVE"
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "INACTIVE"
    with raises(ecs, "ClusterNotFoundException"):
        ecs.delete_cluster(cluster=name)


def test_default_cluster(ecs):
    c = ecs.create_cluster()["cluster"]
    assert c["clusterName"] == "default" and c["clusterArn"] == arn("cluster/default")
    assert ecs.describe_clusters()["clusters"][0]["clusterName"] == "default"


def test_list_clusters_pages(ecs):
    for _ in range(3):
        ecs.create_cluster(clusterName=uname("pg"))
    first = ecs.list_clusters(maxResults=2)
    assert len(first["clusterArns"]) == 2 and first["nextToken"]
    second = ecs.list_clusters(maxResults=2, nextToken=first["nextToken"])
    assert not set(first["clusterArns"]) & set(second["clusterArns"])
    everything = [a for p in ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 2})
                  for a in p["clusterArns"]]
    assert len(everything) == len(set(everything)) >= 3
    with raises(ecs, "InvalidParameterException"):
        ecs.list_clusters(nextToken="not-a-token")


# ---- task definitions


def test_task_definition_revisions(ecs):
    fam = uname("fam")
    one = ecs.register_task_definition(**web_def(fam), tags=[{"key": "k", "value": "v"}])
    td = one["taskDefinition"]
    assert td["taskDefinitionArn"] == arn(f"task-definition/{fam}:1")
    assert (td["revision"], td["status"], td["networkMode"]) == (1, "ACTIVE", "awsvpc")
    assert isinstance(td["registeredAt"], datetime.datetime)
    pm = td["containerDefinitions"][0]["portMappings"][0]
    assert pm == {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": "web-8080"}
    assert td["containerDefinitions"][0]["essential"] is True
    assert one["tags"] == [{"key": "k", "value": "v"}]
    assert ecs.register_task_definition(**web_def(fam))["taskDefinition"]["revision"] == 2

    latest = ecs.describe_task_definition(taskDefinition=fam)["taskDefinition"]
    assert latest["revision"] == 2
    tagged = ecs.describe_task_definition(taskDefinition=f"{fam}:1", include=["TAGS"])
    assert tagged["tags"] == [{"key": "k", "value": "v"}]
    by_arn = ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"])["taskDefinition"]
    assert by_arn["revision"] == 1

    gone = ecs.deregister_task_definition(taskDefinition=f"{fam}:2")["taskDefinition"]
    assert gone["status"] == "INACTIVE" and isinstance(gone["deregisteredAt"], datetime.datetime)
    assert ecs.describe_task_definition(taskDefinition=fam)["taskDefinition"]["revision"] == 1
    assert ecs.list_task_definitions(familyPrefix=fam)["taskDefinitionArns"] == [arn(f"task-definition/{fam}:1")]
    assert ecs.list_task_definitions(familyPrefix=fam, status="INACTIVE")["taskDefinitionArns"] == [
        arn(f"task-definition/{fam}:2")]
    ecs.register_task_definition(**web_def(fam))
    desc = ecs.list_task_definitions(familyPrefix=fam, sort="DESC", maxResults=1)
    assert desc["taskDefinitionArns"] == [arn(f"task-definition/{fam}:3")]
    rest = ecs.list_task_definitions(familyPrefix=fam, sort="DESC", nextToken=desc["nextToken"])
    assert rest["taskDefinitionArns"] == [arn(f"task-definition/{fam}:1")]
    with raises(ecs, "ClientException"):
        ecs.describe_task_definition(taskDefinition=f"{fam}:9")


def _no_image(d):
    del d["containerDefinitions"][0]["image"]


def _duplicate_names(d):
    d["containerDefinitions"].append(dict(d["containerDefinitions"][0]))


def _not_essential(d):
    d["containerDefinitions"][0]["essential"] = False


def _bad_port_name(d):
    d["containerDefinitions"][0]["portMappings"][0]["name"] = "Web Port"


def _duplicate_port_names(d):
    d["containerDefinitions"][0]["portMappings"].append({"containerPort": 9090, "name": "web-8080"})


def _host_port_differs(d):
    d["containerDefinitions"][0]["portMappings"][0]["hostPort"] = 80


def _fargate_bridge(d):
    d["networkMode"] = "bridge"


@pytest.mark.parametrize("edit,words", [
    (_no_image, "image"),
    (_duplicate_names, "Duplicate container names"),
    (_not_essential, "essential"),
    (_bad_port_name, "port mapping name"),
    (_duplicate_port_names, "unique"),
    (_host_port_differs, "host ports and container ports"),
    (_fargate_bridge, "awsvpc"),
])
def test_bad_task_definitions(ecs, edit, words):
    d = web_def(uname("bad"))
    edit(d)
    with raises(ecs, "ClientException") as caught:
        ecs.register_task_definition(**d)
    assert words in caught.value.response["Error"]["Message"]


# ---- services


def test_service_lifecycle_with_lattice(ecs, net, cluster, family):
    svc = ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=family, desiredCount=2,
                             launchType="FARGATE", networkConfiguration=net["network"],
                             vpcLatticeConfigurations=lattice_config(net["tg"]))["service"]
    assert svc["serviceArn"] == arn(f"service/{cluster}/web")
    assert svc["clusterArn"] == arn(f"cluster/{cluster}")
    assert (svc["status"], svc["desiredCount"], svc["runningCount"], svc["pendingCount"]) == ("ACTIVE", 2, 0, 0)
    assert svc["taskDefinition"] == arn(f"task-definition/{family}:1")
    assert isinstance(svc["createdAt"], datetime.datetime)
    [dep] = svc["deployments"]
    assert dep["status"] == "PRIMARY" and dep["rolloutState"] == "IN_PROGRESS"
    assert dep["id"].startswith("ecs-svc/") and len(dep["id"]) == 27
    assert dep["vpcLatticeConfigurations"] == lattice_config(net["tg"])
    assert dep["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [net["subnet"]]

    with raises(ecs, "InvalidParameterException"):
        ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=family,
                           networkConfiguration=net["network"])

    up = ecs.update_service(cluster=cluster, service="web", desiredCount=3)["service"]
    assert len(up["deployments"]) == 1 and up["deployments"][0]["desiredCount"] == 3
    ecs.register_task_definition(**web_def(family))
    up = ecs.update_service(cluster=cluster, service=svc["serviceArn"], taskDefinition=family)["service"]
    assert [d["status"] for d in up["deployments"]] == ["PRIMARY", "ACTIVE"]
    assert up["taskDefinition"] == arn(f"task-definition/{family}:2")
    assert up["deployments"][0]["vpcLatticeConfigurations"] == lattice_config(net["tg"])
    forced = ecs.update_service(cluster=cluster, service="web", forceNewDeployment=True)["service"]
    assert len(forced["deployments"]) == 3

    out = ecs.describe_services(cluster=cluster, services=["web", "nope"])
    assert [s["serviceName"] for s in out["services"]] == ["web"]
    assert out["failures"] == [{"arn": arn(f"service/{cluster}/nope"), "reason": "MISSING"}]
    assert ecs.list_services(cluster=cluster)["serviceArns"] == [svc["serviceArn"]]

    with raises(ecs, "ClusterContainsServicesException"):
        ecs.delete_cluster(cluster=cluster)
    with raises(ecs, "InvalidParameterException"):
        ecs.delete_service(cluster=cluster, service="web")
    gone = ecs.delete_service(cluster=cluster, service="web", force=True)["service"]
    assert (gone["status"], gone["desiredCount"]) == ("DRAINING", 0)
    with raises(ecs, "ServiceNotActiveException"):
        ecs.update_service(cluster=cluster, service="web", desiredCount=1)
    with raises(ecs, "ServiceNotFoundException"):
        ecs.update_service(cluster=cluster, service="never", desiredCount=1)


def test_bad_lattice_configurations(ecs, res, net, cluster, family):
    other_vpc = res.vpc("10.21.0.0/16")
    other_tg = res.tg(vpc=other_vpc)["arn"]
    instance_tg = res.tg(vpc=net["vpc"], type="INSTANCE")["arn"]
    unknown_tg = f"arn:aws:vpc-lattice:{REGION}:{ACCOUNT}:targetgroup/tg-0123456789abcdef0"
    cases = [
        (lattice_config(unknown_tg), "does not exist"),
        (lattice_config(instance_tg), "type IP"),
        (lattice_config(other_tg), "not in the VPC"),
        (lattice_config(net["tg"], "nope"), "portName"),
        ([{"roleArn": "not-a-role", "targetGroupArn": net["tg"], "portName": "web-8080"}], "role"),
        (lattice_config(net["tg"]) * 6, "at most 5"),
        ([{"roleArn": f"arn:aws:iam::{ACCOUNT}:role/noSuchRole", "targetGroupArn": net["tg"],
           "portName": "web-8080"}], "Unable to assume"),
    ]
    for configs, words in cases:
        with raises(ecs, "InvalidParameterException") as caught:
            ecs.create_service(cluster=cluster, serviceName=uname("s"), taskDefinition=family, desiredCount=1,
                               networkConfiguration=net["network"], vpcLatticeConfigurations=configs)
        assert words in caught.value.response["Error"]["Message"], (words, caught.value.response)


def test_bad_network_configurations(ecs, res, net, cluster, family):
    other_subnet = res.subnet(res.vpc("10.22.0.0/16"), "10.22.1.0/24")
    cases = [
        (None, "Network Configuration must be provided"),
        ({"awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"]}}, "InvalidSubnetID.NotFound"),
        ({"awsvpcConfiguration": {"subnets": [net["subnet"], other_subnet]}}, "same VPC"),
        ({"awsvpcConfiguration": {"subnets": [net["subnet"]], "securityGroups": ["sg-0123456789abcdef0"]}},
         "InvalidGroup.NotFound"),
    ]
    for network, words in cases:
        kw = {"networkConfiguration": network} if network else {}
        with raises(ecs, "InvalidParameterException") as caught:
            ecs.run_task(cluster=cluster, taskDefinition=family, **kw)
        assert words in caught.value.response["Error"]["Message"]


# ---- tasks


def test_run_describe_list_stop_tasks(ecs, net, cluster, family):
    out = ecs.run_task(cluster=cluster, taskDefinition=family, count=2, launchType="FARGATE",
                       networkConfiguration=net["network"], startedBy="conformance",
                       tags=[{"key": "k", "value": "v"}])
    assert out["failures"] == []
    tasks = out["tasks"]
    assert len(tasks) == 2
    t = tasks[0]
    task_id = t["taskArn"].rsplit("/", 1)[1]
    assert t["taskArn"] == arn(f"task/{cluster}/{task_id}") and len(task_id) == 32
    assert (t["lastStatus"], t["desiredStatus"], t["group"], t["version"]) == (
        "PROVISIONING", "RUNNING", f"family:{family}", 1)
    assert t["taskDefinitionArn"] == arn(f"task-definition/{family}:1")
    assert isinstance(t["createdAt"], datetime.datetime)
    [c] = t["containers"]
    assert c["name"] == "web" and c["lastStatus"] == "PENDING"
    assert c["containerArn"].startswith(arn(f"container/{cluster}/{task_id}/"))
    [eni] = t["attachments"]
    assert eni["type"] == "ElasticNetworkInterface"
    assert {"name": "subnetId", "value": net["subnet"]} in eni["details"]

    out = ecs.describe_tasks(cluster=cluster, tasks=[task_id, "0" * 32], include=["TAGS"])
    assert [x["taskArn"] for x in out["tasks"]] == [t["taskArn"]]
    assert out["tasks"][0]["tags"] == [{"key": "k", "value": "v"}]
    assert out["failures"] == [{"arn": arn(f"task/{cluster}/{'0' * 32}"), "reason": "MISSING"}]

    page = ecs.list_tasks(cluster=cluster, maxResults=1)
    assert len(page["taskArns"]) == 1 and page["nextToken"]
    everything = [a for p in ecs.get_paginator("list_tasks").paginate(cluster=cluster) for a in p["taskArns"]]
    assert sorted(everything) == sorted(x["taskArn"] for x in tasks)
    assert len(ecs.list_tasks(cluster=cluster, family=family, startedBy="conformance")["taskArns"]) == 2

    stopped = ecs.stop_task(cluster=cluster, task=t["taskArn"], reason="enough")["task"]
    assert (stopped["desiredStatus"], stopped["stopCode"], stopped["stoppedReason"]) == (
        "STOPPED", "UserInitiated", "enough")
    assert isinstance(stopped["stoppingAt"], datetime.datetime)
    assert ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == [t["taskArn"]]
    default_reason = ecs.stop_task(cluster=cluster, task=tasks[1]["taskArn"])["task"]["stoppedReason"]
    assert default_reason == "Task stopped by user"
    with raises(ecs, "InvalidParameterException"):
        ecs.stop_task(cluster=cluster, task="0" * 32)


def test_cluster_errors(ecs, net, cluster, family):
    missing = uname("missing")
    with raises(ecs, "ClusterNotFoundException"):
        ecs.run_task(cluster=missing, taskDefinition=family, networkConfiguration=net["network"])
    with raises(ecs, "ClusterNotFoundException"):
        ecs.list_services(cluster=missing)
    with raises(ecs, "ClusterNotFoundException"):
        ecs.describe_services(cluster=missing, services=["x"])
    with raises(ecs, "ClientException"):
        ecs.run_task(cluster=cluster, taskDefinition=uname("nofam"), networkConfiguration=net["network"])
    ecs.run_task(cluster=cluster, taskDefinition=family, networkConfiguration=net["network"])
    with raises(ecs, "ClusterContainsTasksException"):
        ecs.delete_cluster(cluster=cluster)


# ---- tags


def test_tags(ecs, cluster, family):
    for resource in (arn(f"cluster/{cluster}"), arn(f"task-definition/{family}:1")):
        ecs.tag_resource(resourceArn=resource, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
        ecs.untag_resource(resourceArn=resource, tagKeys=["a"])
        assert ecs.list_tags_for_resource(resourceArn=resource)["tags"] == [{"key": "b", "value": "2"}]
    with raises(ecs, "ClusterNotFoundException"):
        ecs.list_tags_for_resource(resourceArn=arn(f"cluster/{uname('gone')}"))
    with raises(ecs, "InvalidParameterException"):
        ecs.list_tags_for_resource(resourceArn="not-an-arn")


# ---- the aws CLI (v1)


def test_cli_create_service_with_lattice_shorthand(endpoint, net, cluster, family):
    aws = find_aws()
    assert aws, "the aws CLI v1 is required"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret",
               AWS_DEFAULT_REGION=REGION, PATH=f"{Path(aws).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("AWS_PROFILE", None)
    subnet, sg = net["subnet"], net["sg"]
    cmd = [aws, "--endpoint-url", endpoint, "--output", "json", "ecs", "create-service",
           "--cluster", cluster, "--service-name", "cli", "--task-definition", family, "--desired-count", "1",
           "--launch-type", "FARGATE",
           "--network-configuration", f"awsvpcConfiguration={{subnets=[{subnet}],securityGroups=[{sg}]}}",
           "--vpc-lattice-configurations", f"roleArn={ROLE},targetGroupArn={net['tg']},portName=web-8080"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    svc = json.loads(proc.stdout)["service"]
    assert svc["serviceArn"] == arn(f"service/{cluster}/cli")
    assert svc["deployments"][0]["vpcLatticeConfigurations"] == lattice_config(net["tg"])
