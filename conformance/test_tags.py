"""TagResource, UntagResource, ListTagsForResource (and tags given at create time)."""

import pytest

from support import arn, raises


def _arn_of(kind, res):
    if kind == "servicenetwork":
        return res.sn()["arn"]
    if kind == "service":
        return res.service()["arn"]
    if kind == "targetgroup":
        return res.tg()["arn"]
    svc = res.service()
    lst = res.listener(svc["id"])
    if kind == "listener":
        return lst["arn"]
    if kind == "rule":
        return res.rule(svc["id"], lst["id"], 1)["arn"]
    if kind == "snva":
        return res.snva(res.sn()["id"], res.vpc())["arn"]
    if kind == "snsa":
        return res.snsa(res.sn()["id"], svc["id"])["arn"]
    if kind == "als":
        return res.als(svc["id"])["arn"]
    raise AssertionError(kind)


KINDS = ["servicenetwork", "service", "targetgroup", "listener", "rule", "snva", "snsa", "als"]


def tags_of(lattice, resource_arn):
    return lattice.list_tags_for_resource(resourceArn=resource_arn)["tags"]


@pytest.mark.parametrize("kind", KINDS)
def test_tag_list_untag_every_resource_type(lattice, res, kind):
    a = _arn_of(kind, res)
    assert tags_of(lattice, a) == {}, "a resource created without tags has none"
    r = lattice.tag_resource(resourceArn=a, tags={"team": "net", "env": "dev"})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert tags_of(lattice, a) == {"team": "net", "env": "dev"}
    u = lattice.untag_resource(resourceArn=a, tagKeys=["env"])
    assert u["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert tags_of(lattice, a) == {"team": "net"}


def test_tag_merges_and_overwrites(lattice, res):
    a = res.service(tags={"a": "1", "b": "2"})["arn"]
    lattice.tag_resource(resourceArn=a, tags={"b": "20", "c": "3"})
    assert tags_of(lattice, a) == {"a": "1", "b": "20", "c": "3"}


def test_untag_several_and_missing_keys(lattice, res):
    a = res.sn(tags={"a": "1", "b": "2", "c": "3"})["arn"]
    lattice.untag_resource(resourceArn=a, tagKeys=["a", "c", "not-there"])
    assert tags_of(lattice, a) == {"b": "2"}


def test_empty_tag_value_allowed(lattice, res):
    a = res.sn()["arn"]
    lattice.tag_resource(resourceArn=a, tags={"flag": ""})
    assert tags_of(lattice, a) == {"flag": ""}


@pytest.mark.parametrize("create", ["service", "tg", "listener", "snsa", "als"])
def test_tags_given_at_create(lattice, res, create):
    t = {"owner": "conformance"}
    if create == "service":
        a = res.service(tags=t)["arn"]
    elif create == "tg":
        a = res.tg(tags=t)["arn"]
    elif create == "listener":
        a = res.listener(res.service()["id"], tags=t)["arn"]
    elif create == "snsa":
        a = res.snsa(res.sn()["id"], res.service()["id"], tags=t)["arn"]
    else:
        a = res.als(res.sn()["id"], tags=t)["arn"]
    assert tags_of(lattice, a) == t


def test_aws_prefixed_key_rejected(lattice, res):
    a = res.sn()["arn"]
    with raises(lattice, "ValidationException"):
        lattice.tag_resource(resourceArn=a, tags={"aws:reserved": "x"})


def test_too_many_tags_rejected(lattice, res):
    a = res.sn()["arn"]
    with raises(lattice, "ValidationException"):
        lattice.tag_resource(resourceArn=a, tags={f"k{i}": "v" for i in range(201)})


def test_too_long_value_rejected(lattice, res):
    a = res.sn()["arn"]
    with raises(lattice, "ValidationException"):
        lattice.tag_resource(resourceArn=a, tags={"k": "v" * 257})


def test_total_over_200_after_merge_rejected(lattice, res):
    a = res.sn(tags={f"a{i}": "v" for i in range(150)})["arn"]
    with raises(lattice, "ValidationException"):
        lattice.tag_resource(resourceArn=a, tags={f"b{i}": "v" for i in range(60)})
    assert len(tags_of(lattice, a)) == 150, "a rejected TagResource changes nothing"


def test_unknown_resource_is_not_found(lattice):
    missing = arn("service/svc-0123456789abcdef0")
    with raises(lattice, "ResourceNotFoundException"):
        lattice.list_tags_for_resource(resourceArn=missing)
    with raises(lattice, "ResourceNotFoundException"):
        lattice.tag_resource(resourceArn=missing, tags={"a": "b"})
    with raises(lattice, "ResourceNotFoundException"):
        lattice.untag_resource(resourceArn=missing, tagKeys=["a"])


def test_malformed_arn_rejected(lattice):
    with raises(lattice, "ValidationException"):
        lattice.list_tags_for_resource(resourceArn="definitely-not-an-arn")
