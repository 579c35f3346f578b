"""CreateRule, GetRule, ListRules, UpdateRule, DeleteRule, BatchUpdateRule."""

import pytest

from support import (
    assert_id, assert_no_none, assert_timestamp, becomes_gone, find_item, fixed, forward, has_field,
    list_all, path_match, raises, strip_meta, uname,
)

FULL_MATCH = {
    "httpMatch": {
        "method": "GET",
        "pathMatch": {"match": {"prefix": "/api"}, "caseSensitive": False},
        "headerMatches": [{"name": "x-canary", "match": {"exact": "1"}}],
    }
}


def rules_of(lattice, svc, lst):
    return list_all(lattice, "list_rules", serviceIdentifier=svc["id"], listenerIdentifier=lst["id"])


def default_rule(lattice, svc, lst):
    d = [r for r in rules_of(lattice, svc, lst) if r.get("isDefault")]
    assert len(d) == 1, f"exactly one default rule per listener, got {d}"
    return d[0]


def test_new_listener_lists_only_its_default_rule(lattice, svc, listener):
    items = rules_of(lattice, svc, listener)
    assert len(items) == 1, f"a new listener has exactly its default rule, got {items}"
    d = items[0]
    assert d["isDefault"] is True
    assert d["name"] == "default"
    assert_id(d["id"], "rule", "default rule")
    assert d["arn"] == f"{listener['arn']}/rule/{d['id']}"
    assert_no_none(d)


def test_get_default_rule_carries_listener_action(lattice, svc, listener, tg):
    d = default_rule(lattice, svc, listener)
    g = lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=d["id"])
    assert g["isDefault"] is True
    assert g["name"] == "default"
    assert g["action"] == listener["defaultAction"]
    assert_no_none(strip_meta(g))


def test_create_rule_shape(lattice, res, svc, listener, tg):
    name = uname("r")
    r = res.rule(svc["id"], listener["id"], 10, name=name, match=FULL_MATCH, action=forward(tg["id"]))
    assert_id(r["id"], "rule", "rule")
    assert r["arn"] == f"{listener['arn']}/rule/{r['id']}"
    assert r["name"] == name
    assert r["priority"] == 10
    hm = r["match"]["httpMatch"]
    assert hm["method"] == "GET"
    assert hm["pathMatch"]["match"] == {"prefix": "/api"}
    assert hm["pathMatch"]["caseSensitive"] is False
    assert hm["headerMatches"][0]["name"] == "x-canary"
    assert hm["headerMatches"][0]["match"] == {"exact": "1"}
    assert r["action"] == {"forward": {"targetGroups": [{"targetGroupIdentifier": tg["id"], "weight": 100}]}}
    assert_no_none(strip_meta(r))


def test_get_rule(lattice, res, svc, listener, tg):
    r = res.rule(svc["id"], listener["id"], 20, match=FULL_MATCH, action=fixed(404))
    g = lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=r["id"])
    for k in ("arn", "id", "name", "priority", "match", "action"):
        assert g[k] == r[k], f"GetRule.{k} differs from the create response"
    assert g["isDefault"] is False
    assert_timestamp(g["createdAt"], "createdAt")
    assert_timestamp(g["lastUpdatedAt"], "lastUpdatedAt")


def test_get_rule_by_arns(lattice, res, svc, listener):
    r = res.rule(svc["id"], listener["id"], 5)
    g = lattice.get_rule(serviceIdentifier=svc["arn"], listenerIdentifier=listener["arn"], ruleIdentifier=r["arn"])
    assert g["id"] == r["id"]


def test_list_rules(lattice, res, svc, listener):
    a = res.rule(svc["id"], listener["id"], 10)
    b = res.rule(svc["id"], listener["id"], 20)
    items = rules_of(lattice, svc, listener)
    assert len(items) == 3, "two custom rules plus the default rule"
    ia, ib = find_item(items, a["id"]), find_item(items, b["id"])
    assert ia["isDefault"] is False and ia["priority"] == 10 and ia["name"] == a["name"] and ia["arn"] == a["arn"]
    assert ib["priority"] == 20
    assert_timestamp(ia["createdAt"], "items[].createdAt")
    assert_no_none(items)


def test_duplicate_priority_conflicts(lattice, res, svc, listener):
    res.rule(svc["id"], listener["id"], 10)
    with raises(lattice, "ConflictException", resourceType="RULE"):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=uname("r"),
                            priority=10, match=path_match("/other"), action=fixed(404))


def test_duplicate_name_conflicts(lattice, res, svc, listener):
    r = res.rule(svc["id"], listener["id"], 10)
    with raises(lattice, "ConflictException", resourceType="RULE"):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=r["name"],
                            priority=11, match=path_match("/other"), action=fixed(404))


@pytest.mark.parametrize("priority", [0, 2001])
def test_priority_out_of_range(lattice_nv, svc, listener, priority):
    with raises(lattice_nv, "ValidationException", fieldList=has_field("priority")):
        lattice_nv.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=uname("r"),
                               priority=priority, match=path_match(), action=fixed(404))


@pytest.mark.parametrize("bad", ["rule-abc", "default-", "UPPER", "a--b"])
def test_bad_rule_names(lattice, svc, listener, bad):
    with raises(lattice, "ValidationException", reason="fieldValidationFailed", fieldList=has_field("name")):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=bad,
                            priority=1, match=path_match(), action=fixed(404))


def test_fixed_response_other_than_404_500_rejected(lattice, svc, listener):
    with raises(lattice, "ValidationException"):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=uname("r"),
                            priority=1, match=path_match(), action=fixed(418))


def test_too_many_header_matches_rejected(lattice, svc, listener):
    match = {"httpMatch": {"headerMatches": [{"name": f"x-h{i}", "match": {"exact": "v"}} for i in range(6)]}}
    with raises(lattice, "ValidationException"):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=uname("r"),
                            priority=1, match=match, action=fixed(404))


def test_bad_path_match_rejected(lattice, svc, listener):
    with raises(lattice, "ValidationException"):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=uname("r"),
                            priority=1, match=path_match("no-leading-slash"), action=fixed(404))


def test_match_union_with_two_path_types_rejected(lattice_nv, svc, listener):
    match = {"httpMatch": {"pathMatch": {"match": {"prefix": "/a", "exact": "/a"}}}}
    with raises(lattice_nv, "ValidationException"):
        lattice_nv.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=uname("r"),
                               priority=1, match=match, action=fixed(404))


def test_create_rule_unknown_listener(lattice, svc):
    with raises(lattice, "ResourceNotFoundException", resourceType="LISTENER"):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier="listener-0123456789abcdef0",
                            name=uname("r"), priority=1, match=path_match(), action=fixed(404))


def test_create_rule_forward_unknown_tg(lattice, svc, listener):
    with raises(lattice, "ResourceNotFoundException", resourceType="TARGET_GROUP"):
        lattice.create_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], name=uname("r"),
                            priority=1, match=path_match(), action=forward("tg-0123456789abcdef0"))


def test_get_unknown_rule(lattice, svc, listener):
    with raises(lattice, "ResourceNotFoundException", resourceType="RULE", resourceId="rule-0123456789abcdef0"):
        lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"],
                         ruleIdentifier="rule-0123456789abcdef0")


def test_update_rule_priority_match_action(lattice, res, svc, listener, tg):
    r = res.rule(svc["id"], listener["id"], 10)
    u = lattice.update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=r["id"],
                            priority=15, match=path_match("/v2", method="POST"), action=forward(tg["id"], weights=[3]))
    assert u["id"] == r["id"] and u["arn"] == r["arn"] and u["name"] == r["name"]
    assert u["priority"] == 15
    assert u["match"]["httpMatch"]["pathMatch"]["match"] == {"prefix": "/v2"}
    assert u["match"]["httpMatch"]["method"] == "POST"
    assert u["action"] == forward(tg["id"], weights=[3])
    assert u["isDefault"] is False
    g = lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=r["id"])
    assert g["priority"] == 15 and g["action"] == u["action"] and g["match"] == u["match"]
    assert g["lastUpdatedAt"] >= g["createdAt"]


def test_update_rule_only_priority_keeps_rest(lattice, res, svc, listener):
    r = res.rule(svc["id"], listener["id"], 10, match=FULL_MATCH)
    lattice.update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=r["id"],
                        priority=12)
    g = lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=r["id"])
    assert g["priority"] == 12
    assert g["match"] == r["match"]
    assert g["action"] == r["action"]


def test_update_rule_to_taken_priority_conflicts(lattice, res, svc, listener):
    res.rule(svc["id"], listener["id"], 10)
    b = res.rule(svc["id"], listener["id"], 20)
    with raises(lattice, "ConflictException", resourceType="RULE"):
        lattice.update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=b["id"],
                            priority=10)


def test_default_rule_cannot_be_updated_or_deleted(lattice, svc, listener):
    d = default_rule(lattice, svc, listener)
    with raises(lattice, "ValidationException"):
        lattice.update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=d["id"],
                            action=fixed(500))
    with raises(lattice, "ValidationException"):
        lattice.delete_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=d["id"])
    assert default_rule(lattice, svc, listener)["id"] == d["id"]


def test_delete_rule(lattice, res, svc, listener):
    r = res.rule(svc["id"], listener["id"], 10)
    d = lattice.delete_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=r["id"])
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    becomes_gone(lattice, lambda: lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"],
                                                   ruleIdentifier=r["id"]), "deleted rule", resource_type="RULE")
    assert [x["id"] for x in rules_of(lattice, svc, listener) if not x.get("isDefault")] == []


def test_rule_forward_marks_tg_used_by_service(lattice, res, svc, vpc):
    lst = res.listener(svc["id"])
    t = res.tg(vpc=vpc)
    res.rule(svc["id"], lst["id"], 1, tg_id=t["id"])
    assert svc["arn"] in lattice.get_target_group(targetGroupIdentifier=t["id"]).get("serviceArns", [])


# ---------------------------------------------------------------------------------------------
# BatchUpdateRule
# ---------------------------------------------------------------------------------------------


def test_batch_swaps_priorities_atomically(lattice, res, svc, listener):
    a = res.rule(svc["id"], listener["id"], 10)
    b = res.rule(svc["id"], listener["id"], 20)
    r = lattice.batch_update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], rules=[
        {"ruleIdentifier": a["id"], "priority": 20},
        {"ruleIdentifier": b["id"], "priority": 10},
    ])
    assert r.get("unsuccessful", []) == [], f"swap must succeed: {r.get('unsuccessful')}"
    ok = {x["id"]: x for x in r["successful"]}
    assert set(ok) == {a["id"], b["id"]}
    assert ok[a["id"]]["priority"] == 20 and ok[b["id"]]["priority"] == 10
    assert ok[a["id"]]["arn"] == a["arn"] and ok[a["id"]]["name"] == a["name"]
    assert_no_none(strip_meta(r))
    get = lambda rid: lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"],
                                       ruleIdentifier=rid)
    assert get(a["id"])["priority"] == 20
    assert get(b["id"])["priority"] == 10


def test_batch_updates_action_and_match(lattice, res, svc, listener, tg):
    a = res.rule(svc["id"], listener["id"], 10)
    r = lattice.batch_update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], rules=[
        {"ruleIdentifier": a["arn"], "action": forward(tg["id"]), "match": path_match("/batched")},
    ])
    assert r.get("unsuccessful", []) == []
    g = lattice.get_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], ruleIdentifier=a["id"])
    assert g["match"]["httpMatch"]["pathMatch"]["match"] == {"prefix": "/batched"}
    assert g["action"]["forward"]["targetGroups"][0]["targetGroupIdentifier"] == tg["id"]
    assert g["priority"] == 10


def test_batch_reports_per_item_failures(lattice, res, svc, listener):
    a = res.rule(svc["id"], listener["id"], 10)
    missing = "rule-0123456789abcdef0"
    r = lattice.batch_update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], rules=[
        {"ruleIdentifier": a["id"], "priority": 11},
        {"ruleIdentifier": missing, "priority": 12},
    ])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert [x["id"] for x in r.get("successful", [])] == [a["id"]]
    bad = r.get("unsuccessful", [])
    assert len(bad) == 1 and bad[0]["ruleIdentifier"] == missing, bad
    assert bad[0].get("failureCode"), "RuleUpdateFailure.failureCode must be set"
    assert bad[0].get("failureMessage"), "RuleUpdateFailure.failureMessage must be set"


def test_batch_default_rule_is_a_failure_item(lattice, svc, listener):
    d = default_rule(lattice, svc, listener)
    r = lattice.batch_update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], rules=[
        {"ruleIdentifier": d["id"], "action": fixed(500)},
    ])
    assert r.get("successful", []) == []
    assert [x["ruleIdentifier"] for x in r.get("unsuccessful", [])] == [d["id"]]


def test_batch_more_than_ten_rejected(lattice, svc, listener):
    rules = [{"ruleIdentifier": f"rule-0123456789abcde{i:02x}", "priority": i + 1} for i in range(11)]
    with raises(lattice, "ValidationException"):
        lattice.batch_update_rule(serviceIdentifier=svc["id"], listenerIdentifier=listener["id"], rules=rules)


def test_batch_unknown_listener(lattice, svc):
    with raises(lattice, "ResourceNotFoundException", resourceType="LISTENER"):
        lattice.batch_update_rule(serviceIdentifier=svc["id"], listenerIdentifier="listener-0123456789abcdef0",
                                  rules=[{"ruleIdentifier": "rule-0123456789abcdef0", "priority": 1}])
