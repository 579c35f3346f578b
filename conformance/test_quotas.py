"""Quotas (lattice.md §7): 402 ServiceQuotaExceededException, serviceCode "vpc-lattice" and the
Service Quotas code. Each test starts its own small-quota server from a [quotas] TOML table (or
TRELLIS_QUOTAS_<NAME> environment variables)."""

import time

import pytest

from support import Factory, becomes_gone, fixed, forward, path_match, raises, uname

QUOTA_CODES = {
    "service_networks": "L-9CAD07FB",
    "services": "L-620C821E",
    "target_groups": "L-BB11C6B9",
    "listeners_per_service": "L-D64E952E",
    "rules_per_listener": "L-CF78395E",
    "target_groups_per_service": "L-3DEC3B9F",
    "targets_per_target_group": "L-D71303F3",
    "vpc_associations_per_service_network": "L-EF6E2D62",
    "service_associations_per_service_network": "L-75D4A19E",
}


def quota_error(client, quota, resource_type):
    return raises(client, "ServiceQuotaExceededException", 402, serviceCode="vpc-lattice",
                  quotaCode=QUOTA_CODES[quota], resourceType=resource_type)


@pytest.fixture
def small(server_factory):
    """small(quotas) -> (lattice, ec2, factory) against a fresh server with those quotas."""

    def start(quotas=None, env=None):
        srv = server_factory(quotas=quotas, env=env)
        la, ec2 = srv.client("vpc-lattice"), srv.client("ec2")
        return la, ec2, Factory(la, ec2)

    return start


def test_service_networks(small):
    la, _, f = small({"service_networks": 2})
    f.sn(), f.sn()
    with quota_error(la, "service_networks", "SERVICE_NETWORK"):
        f.sn()


def test_services_and_quota_frees_after_delete(small):
    la, _, f = small({"services": 3})
    made = [f.service() for _ in range(3)]
    with quota_error(la, "services", "SERVICE"):
        f.service()
    la.delete_service(serviceIdentifier=made[0]["id"])
    becomes_gone(la, lambda: la.get_service(serviceIdentifier=made[0]["id"]), "deleted service")
    f.service()  # the freed slot can be used again


def test_target_groups(small):
    la, _, f = small({"target_groups": 2})
    vpc = f.vpc()
    f.tg(vpc=vpc), f.tg(vpc=vpc)
    with quota_error(la, "target_groups", "TARGET_GROUP"):
        f.tg(vpc=vpc)


def test_listeners_per_service(small):
    la, _, f = small({"listeners_per_service": 1})
    svc = f.service()
    f.listener(svc["id"], port=80)
    with quota_error(la, "listeners_per_service", "LISTENER"):
        la.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="HTTP", port=81,
                           defaultAction=fixed(404))
    other = f.service()
    f.listener(other["id"], port=80)  # the quota is per service


def test_default_listener_quota_is_two(small):
    la, _, f = small()
    svc = f.service()
    f.listener(svc["id"], port=80)
    f.listener(svc["id"], port=81)
    with quota_error(la, "listeners_per_service", "LISTENER"):
        la.create_listener(serviceIdentifier=svc["id"], name=uname("l"), protocol="HTTP", port=82,
                           defaultAction=fixed(404))


def test_rules_per_listener_excludes_default_rule(small):
    la, _, f = small({"rules_per_listener": 2})
    svc = f.service()
    lst = f.listener(svc["id"])
    f.rule(svc["id"], lst["id"], 1)
    f.rule(svc["id"], lst["id"], 2)
    with quota_error(la, "rules_per_listener", "RULE"):
        la.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=lst["id"], name=uname("r"), priority=3,
                       match=path_match("/three"), action=fixed(404))


def test_target_groups_per_service(small):
    la, _, f = small({"target_groups_per_service": 2})
    vpc = f.vpc()
    t1, t2, t3 = f.tg(vpc=vpc), f.tg(vpc=vpc), f.tg(vpc=vpc)
    svc = f.service()
    lst = f.listener(svc["id"], tg_id=t1["id"])
    f.rule(svc["id"], lst["id"], 1, tg_id=t2["id"])
    f.rule(svc["id"], lst["id"], 2, tg_id=t1["id"])  # re-using a TG already counted is fine
    with quota_error(la, "target_groups_per_service", "TARGET_GROUP"):
        la.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=lst["id"], name=uname("r"), priority=3,
                       match=path_match("/three"), action=forward(t3["id"]))


def test_targets_per_target_group(small):
    la, _, f = small({"targets_per_target_group": 3})
    t = f.tg()
    r = la.register_targets(targetGroupIdentifier=t["id"], targets=[{"id": "10.0.1.1"}, {"id": "10.0.1.2"}])
    assert r.get("unsuccessful", []) == []
    with quota_error(la, "targets_per_target_group", "TARGET_GROUP"):
        la.register_targets(targetGroupIdentifier=t["id"], targets=[{"id": "10.0.1.3"}, {"id": "10.0.1.4"}])
    items = la.list_targets(targetGroupIdentifier=t["id"])["items"]
    assert len(items) == 2, "a call refused for quota registers nothing"
    la.register_targets(targetGroupIdentifier=t["id"], targets=[{"id": "10.0.1.3"}])  # exactly at the quota
    la.register_targets(targetGroupIdentifier=t["id"], targets=[{"id": "10.0.1.3"}])  # re-register: no new target


def test_vpc_associations_per_service_network(small):
    la, _, f = small({"vpc_associations_per_service_network": 1})
    sn = f.sn()
    f.snva(sn["id"], f.vpc())
    with quota_error(la, "vpc_associations_per_service_network", "SERVICE_NETWORK_VPC_ASSOCIATION"):
        la.create_service_network_vpc_association(serviceNetworkIdentifier=sn["id"], vpcIdentifier=f.vpc())


def test_service_associations_per_service_network(small):
    la, _, f = small({"service_associations_per_service_network": 1})
    sn = f.sn()
    f.snsa(sn["id"], f.service()["id"])
    with quota_error(la, "service_associations_per_service_network", "SERVICE_NETWORK_SERVICE_ASSOCIATION"):
        la.create_service_network_service_association(serviceNetworkIdentifier=sn["id"],
                                                      serviceIdentifier=f.service()["id"])


def test_quota_from_environment(small):
    la, _, f = small(env={"TRELLIS_QUOTAS_SERVICE_NETWORKS": "1"})
    f.sn()
    with quota_error(la, "service_networks", "SERVICE_NETWORK"):
        f.sn()


def test_environment_overrides_config_file(small):
    la, _, f = small(quotas={"services": 5}, env={"TRELLIS_QUOTAS_SERVICES": "1"})
    f.service()
    with quota_error(la, "services", "SERVICE"):
        f.service()


def test_quotas_are_per_region(server_factory):
    srv = server_factory(quotas={"service_networks": 1})
    east, west = srv.client("vpc-lattice"), srv.client("vpc-lattice", region="eu-west-1")
    east.create_service_network(name=uname("sn"))
    west.create_service_network(name=uname("sn"))
    with quota_error(east, "service_networks", "SERVICE_NETWORK"):
        east.create_service_network(name=uname("sn"))


def test_unknown_config_key_is_rejected(server_factory):
    srv = server_factory(config_text="[quotas]\nservices = 5\nno_such_quota = 1\n", wait=False)
    srv.spawn()
    deadline = time.monotonic() + 15
    while srv.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    code = srv.proc.poll()
    assert code is not None and code != 0, (
        f"trellis serve must refuse an unknown config key and exit non-zero (exit code: {code}); "
        f"log:\n{srv.log_tail()}")
    assert "no_such_quota" in srv.log_tail(200), "the error should name the unknown key"


def test_unknown_top_level_config_key_is_rejected(server_factory):
    srv = server_factory(config_text="[definitely_not_a_section]\nx = 1\n", wait=False)
    srv.spawn()
    deadline = time.monotonic() + 15
    while srv.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    code = srv.proc.poll()
    assert code is not None and code != 0, f"unknown top-level key must be refused (exit code {code})"
