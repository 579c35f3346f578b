"""Pagination of List* operations: maxResults, nextToken, the CLI's auto-pagination contract."""

import pytest

from support import EXTERNAL, raises, uname

N = 250


def walk(fn, page_size, **kw):
    """Walk one listing page by page with maxResults=page_size; returns (ids, pages)."""
    ids, tokens, token, pages = [], set(), None, 0
    while True:
        args = dict(kw, maxResults=page_size)
        if token is not None:
            args["nextToken"] = token
        r = fn(**args)
        pages += 1
        items = r["items"]
        assert len(items) <= page_size, f"maxResults={page_size} but the page has {len(items)} items"
        ids.extend(i["id"] for i in items)
        token = r.get("nextToken")
        if token is None:
            return ids, pages
        assert items, f"maxResults={page_size}: an empty page came with a nextToken"
        assert token not in tokens, f"maxResults={page_size}: nextToken {token!r} was returned twice"
        tokens.add(token)
        assert pages <= 100000


@pytest.fixture(scope="module")
def many_services(lattice):
    from support import Factory
    f = Factory(lattice, None)
    ids = [f.service(name=uname("pg"))["id"] for _ in range(N)]
    yield ids
    if EXTERNAL:  # a spawned server is thrown away anyway; don't spend 250 deletes on it
        f.cleanup()


@pytest.fixture(scope="module")
def big_tg(lattice, ec2):
    from support import Factory
    f = Factory(lattice, ec2)
    t = f.tg(config={"port": 8080, "protocol": "HTTP", "vpcIdentifier": f.vpc()})
    targets = [{"id": f"10.0.{i // 200}.{i % 200 + 1}"} for i in range(N)]
    for chunk in range(0, N, 100):
        r = lattice.register_targets(targetGroupIdentifier=t["id"], targets=targets[chunk:chunk + 100])
        assert r.get("unsuccessful", []) == []
    yield t, sorted(x["id"] for x in targets)
    if EXTERNAL:
        f.cleanup()


def test_list_services_every_page_size(lattice, many_services):
    mine = set(many_services)
    for size in range(1, 101):
        ids, pages = walk(lattice.list_services, size)
        assert len(ids) == len(set(ids)), f"maxResults={size}: an item was returned twice"
        missing = mine - set(ids)
        assert not missing, f"maxResults={size}: {len(missing)} of our {N} services never appeared"
        assert pages >= -(-len(ids) // size)


def test_list_targets_every_page_size(lattice, big_tg):
    t, expected = big_tg
    for size in range(1, 101):
        ids, pages = walk(lattice.list_targets, size, targetGroupIdentifier=t["id"])
        assert sorted(ids) == expected, f"maxResults={size}: targets listed {len(ids)} (expected each of {N} once)"
        assert pages == -(-N // size), f"maxResults={size}: {pages} pages for {N} items (pages must be full)"


def test_default_page_size_is_at_most_100(lattice, many_services):
    r = lattice.list_services()
    assert len(r["items"]) <= 100
    assert "nextToken" in r, f"more than 100 services exist, the first default page must have a nextToken"


def test_last_page_has_no_token(lattice, big_tg):
    t, _ = big_tg
    r = lattice.list_targets(targetGroupIdentifier=t["id"], maxResults=100)
    r = lattice.list_targets(targetGroupIdentifier=t["id"], maxResults=100, nextToken=r["nextToken"])
    r = lattice.list_targets(targetGroupIdentifier=t["id"], maxResults=100, nextToken=r["nextToken"])
    assert len(r["items"]) == N - 200
    assert "nextToken" not in r


def test_boto3_paginator(lattice, many_services):
    seen = []
    for page in lattice.get_paginator("list_services").paginate(PaginationConfig={"PageSize": 37}):
        seen.extend(i["id"] for i in page["items"])
    assert set(many_services) <= set(seen)
    assert len(seen) == len(set(seen))


def test_small_listings_page(lattice, res):
    """ListServiceNetworks and ListTargetGroups page the same way."""
    sns = {res.sn()["id"] for _ in range(7)}
    vpc = res.vpc()
    tgs = {res.tg(vpc=vpc)["id"] for _ in range(7)}
    for size in (1, 2, 3, 100):
        ids, _ = walk(lattice.list_service_networks, size)
        assert sns <= set(ids) and len(ids) == len(set(ids)), f"ListServiceNetworks maxResults={size}"
        ids, _ = walk(lattice.list_target_groups, size, vpcIdentifier=vpc)
        assert sorted(ids) == sorted(tgs), f"ListTargetGroups(vpcIdentifier) maxResults={size}"


LISTS = [
    ("list_services", {}),
    ("list_service_networks", {}),
    ("list_target_groups", {}),
    ("list_service_network_vpc_associations", {"serviceNetworkIdentifier": "sn-0123456789abcdef0"}),
    ("list_service_network_service_associations", {"serviceNetworkIdentifier": "sn-0123456789abcdef0"}),
]


@pytest.mark.parametrize("op,kw", LISTS)
@pytest.mark.parametrize("bad", [0, 101])
def test_max_results_out_of_range(lattice_nv, op, kw, bad):
    with raises(lattice_nv, "ValidationException"):
        getattr(lattice_nv, op)(maxResults=bad, **kw)


@pytest.mark.parametrize("bad", [0, 101, -1])
def test_max_results_out_of_range_list_targets(lattice_nv, tg, bad):
    with raises(lattice_nv, "ValidationException"):
        lattice_nv.list_targets(targetGroupIdentifier=tg["id"], maxResults=bad)


def test_garbage_next_token_rejected(lattice):
    with raises(lattice, "ValidationException"):
        lattice.list_services(nextToken="this-is-not-a-token-we-issued")
