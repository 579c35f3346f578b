"""RegisterTargets, ListTargets, DeregisterTargets."""

from support import assert_no_none, list_all, raises, strip_meta

FRESH_STATUSES = {"INITIAL", "UNUSED"}


def targets_of(lattice, tg_id, **kw):
    return list_all(lattice, "list_targets", targetGroupIdentifier=tg_id, **kw)


def test_register_echoes_targets_with_default_port(lattice, tg):
    r = lattice.register_targets(targetGroupIdentifier=tg["id"],
                                 targets=[{"id": "10.0.1.23", "port": 9090}, {"id": "10.0.1.24"}])
    assert r.get("unsuccessful", []) == [], r.get("unsuccessful")
    ok = sorted(r["successful"], key=lambda t: t["id"])
    assert ok == [{"id": "10.0.1.23", "port": 9090}, {"id": "10.0.1.24", "port": 8080}], (
        f"successful echoes {{id, port}}, a missing port defaults to the TG port 8080: {ok}")
    assert_no_none(strip_meta(r))


def test_list_targets_of_fresh_unused_tg(lattice, tg):
    lattice.register_targets(targetGroupIdentifier=tg["id"], targets=[{"id": "10.0.1.23"}, {"id": "10.0.1.24"}])
    items = targets_of(lattice, tg["id"])
    assert sorted((t["id"], t["port"]) for t in items) == [("10.0.1.23", 8080), ("10.0.1.24", 8080)]
    for t in items:
        assert t["status"] in FRESH_STATUSES, f"a fresh target is INITIAL or UNUSED, got {t}"
    assert_no_none(items)


def test_list_targets_by_arn_and_filter(lattice, tg):
    lattice.register_targets(targetGroupIdentifier=tg["id"], targets=[{"id": "10.0.1.23"}, {"id": "10.0.1.24"}])
    items = targets_of(lattice, tg["arn"], targets=[{"id": "10.0.1.24"}])
    assert [t["id"] for t in items] == ["10.0.1.24"], f"ListTargets filter returned {items}"


def test_list_targets_empty(lattice, tg):
    r = lattice.list_targets(targetGroupIdentifier=tg["id"])
    assert r["items"] == []
    assert "nextToken" not in r


def test_reregister_is_idempotent(lattice, tg):
    for _ in range(2):
        r = lattice.register_targets(targetGroupIdentifier=tg["id"], targets=[{"id": "10.0.1.23", "port": 8080}])
        assert r.get("unsuccessful", []) == []
    items = targets_of(lattice, tg["id"])
    assert [(t["id"], t["port"]) for t in items] == [("10.0.1.23", 8080)]


def test_same_ip_on_two_ports_are_two_targets(lattice, tg):
    lattice.register_targets(targetGroupIdentifier=tg["id"],
                             targets=[{"id": "10.0.1.23", "port": 8080}, {"id": "10.0.1.23", "port": 8081}])
    items = targets_of(lattice, tg["id"])
    assert sorted(t["port"] for t in items) == [8080, 8081]


def test_deregister(lattice, tg):
    lattice.register_targets(targetGroupIdentifier=tg["id"], targets=[{"id": "10.0.1.23"}, {"id": "10.0.1.24"}])
    d = lattice.deregister_targets(targetGroupIdentifier=tg["id"], targets=[{"id": "10.0.1.23"}])
    assert d.get("unsuccessful", []) == []
    assert d["successful"] == [{"id": "10.0.1.23", "port": 8080}]
    items = {t["id"]: t for t in targets_of(lattice, tg["id"])}
    assert items["10.0.1.24"]["status"] in FRESH_STATUSES
    if "10.0.1.23" in items:
        assert items["10.0.1.23"]["status"] == "DRAINING", f"a deregistered target is DRAINING or gone: {items}"


def test_register_more_than_100_rejected(lattice, tg):
    targets = [{"id": f"10.0.2.{i}"} for i in range(101)]
    with raises(lattice, "ValidationException"):
        lattice.register_targets(targetGroupIdentifier=tg["id"], targets=targets)
    assert targets_of(lattice, tg["id"]) == [], "a rejected call registers nothing"


def test_register_bad_port_rejected(lattice, tg):
    with raises(lattice, "ValidationException"):
        lattice.register_targets(targetGroupIdentifier=tg["id"], targets=[{"id": "10.0.1.23", "port": 70000}])


def test_register_unknown_tg(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="TARGET_GROUP", resourceId="tg-0123456789abcdef0"):
        lattice.register_targets(targetGroupIdentifier="tg-0123456789abcdef0", targets=[{"id": "10.0.1.23"}])


def test_list_unknown_tg(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="TARGET_GROUP"):
        lattice.list_targets(targetGroupIdentifier="tg-0123456789abcdef0")


def test_deregister_unknown_tg(lattice):
    with raises(lattice, "ResourceNotFoundException", resourceType="TARGET_GROUP"):
        lattice.deregister_targets(targetGroupIdentifier="tg-0123456789abcdef0", targets=[{"id": "10.0.1.23"}])
