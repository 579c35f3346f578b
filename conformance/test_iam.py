"""The IAM subset (query protocol): roles, the built-in ECS infrastructure policy, paging, errors,
and the `aws iam` CLI (issue 5, item 2: "the infrastructure role")."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import ACCOUNT, assert_timestamp, make_client, raises, raw_request, uname

POLICY_ARN = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice"
POLICY_NAME = "AmazonECSInfrastructureRolePolicyForVpcLattice"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
ROLE_ID_RE = r"^AROA[A-Z0-9]{17}$"


@pytest.fixture(scope="module")
def iam(endpoint):
    return make_client("iam", endpoint)


@pytest.fixture(scope="module")
def iam_nv(endpoint):
    """Without botocore's client-side validation, so bad values reach the server."""
    return make_client("iam", endpoint, parameter_validation=False)


@pytest.fixture
def roles(iam):
    """Creates roles (unique names) and deletes them, detaching first, when the test ends."""
    made = []

    def create(name=None, trust=TRUST, **kw):
        name = name or uname("role")
        doc = trust if isinstance(trust, str) else json.dumps(trust)
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=doc, **kw)["Role"]
        made.append(name)
        return role

    yield create
    for name in made:
        try:
            for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=name, PolicyArn=p["PolicyArn"])
            iam.delete_role(RoleName=name)
        except iam.exceptions.NoSuchEntityException:
            pass


def status(resp):
    return resp["ResponseMetadata"]["HTTPStatusCode"]


# ---------------------------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------------------------


def test_create_role(roles):
    name = uname("role")
    role = roles(name, Path="/ecs/", Description="ECS infrastructure role", MaxSessionDuration=7200,
                 Tags=[{"Key": "team", "Value": "net"}, {"Key": "env", "Value": ""}])
    assert role["RoleName"] == name
    assert role["Path"] == "/ecs/"
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/ecs/{name}"
    assert re.match(ROLE_ID_RE, role["RoleId"]), role["RoleId"]
    assert_timestamp(role["CreateDate"], "CreateDate")
    assert role["AssumeRolePolicyDocument"] == TRUST, "boto3 decodes the percent-encoded document"
    assert role["Description"] == "ECS infrastructure role"
    assert role["MaxSessionDuration"] == 7200
    assert role["Tags"] == [{"Key": "team", "Value": "net"}, {"Key": "env", "Value": ""}]


def test_get_role(iam, roles):
    made = roles(Description="x")
    got = iam.get_role(RoleName=made["RoleName"])
    assert status(got) == 200
    role = got["Role"]
    for key in ("RoleName", "RoleId", "Arn", "Path", "CreateDate", "Description"):
        assert role[key] == made[key], key
    assert role["AssumeRolePolicyDocument"] == TRUST
    assert role["MaxSessionDuration"] == 3600, "the default session duration"
    assert "Tags" not in role, "no tags: the member is left out"


def test_policy_document_is_percent_encoded_on_the_wire(iam, roles):
    """AWS returns the document URL-encoded; boto3 decodes it (botocore's json_decode_policies)."""
    doc = json.dumps(TRUST, indent=2)  # spaces and newlines must survive the round trip
    made = roles(trust=doc)
    raw = {}
    iam.meta.events.register("before-parse.iam.GetRole", lambda response_dict, **_: raw.update(
        body=response_dict["body"].decode()), unique_id="raw-getrole")
    try:
        role = iam.get_role(RoleName=made["RoleName"])["Role"]
    finally:
        iam.meta.events.unregister("before-parse.iam.GetRole", unique_id="raw-getrole")
    assert "%7B" in raw["body"] and "%20" in raw["body"] and "{" not in raw["body"].split(
        "<AssumeRolePolicyDocument>")[1].split("</AssumeRolePolicyDocument>")[0]
    assert role["AssumeRolePolicyDocument"] == TRUST


def test_role_names_ignore_case(iam, roles):
    name = uname("Role")
    roles(name)
    assert iam.get_role(RoleName=name.upper())["Role"]["RoleName"] == name
    with raises(iam, "EntityAlreadyExists", 409):
        iam.create_role(RoleName=name.lower(), AssumeRolePolicyDocument=json.dumps(TRUST))


def test_list_roles_path_prefix_and_paging(iam, roles):
    prefix = f"/{uname('p')}/"
    names = sorted(roles(Path=prefix + "sub/" if i % 2 else prefix)["RoleName"] for i in range(7))
    listed = iam.list_roles(PathPrefix=prefix)
    assert status(listed) == 200 and listed["IsTruncated"] is False and "Marker" not in listed
    assert sorted(r["RoleName"] for r in listed["Roles"]) == names
    assert all("Tags" not in r for r in listed["Roles"])
    assert all(r["AssumeRolePolicyDocument"] == TRUST for r in listed["Roles"])
    sub = iam.list_roles(PathPrefix=prefix + "sub/")["Roles"]
    assert len(sub) == 3 and all(r["Path"] == prefix + "sub/" for r in sub)

    # By hand: MaxItems and Marker.
    seen, marker = [], None
    while True:
        kw = {"Marker": marker} if marker else {}
        page = iam.list_roles(PathPrefix=prefix, MaxItems=3, **kw)
        assert len(page["Roles"]) <= 3
        seen += [r["RoleName"] for r in page["Roles"]]
        if not page["IsTruncated"]:
            break
        marker = page["Marker"]
    assert sorted(seen) == names and len(seen) == len(set(seen))

    # And with boto3's paginator.
    pages = list(iam.get_paginator("list_roles").paginate(PathPrefix=prefix, PaginationConfig={"PageSize": 2}))
    assert len(pages) == 4
    assert sorted(r["RoleName"] for p in pages for r in p["Roles"]) == names


def test_list_roles_errors(iam, iam_nv):
    with raises(iam_nv, "ValidationError", 400):
        iam_nv.list_roles(MaxItems=0)
    with raises(iam_nv, "ValidationError", 400):
        iam_nv.list_roles(MaxItems=1001)
    with raises(iam, "ValidationError", 400):
        iam.list_roles(Marker="not-a-marker-of-ours")
    with raises(iam, "ValidationError", 400):
        iam.list_roles(PathPrefix="no-slash")


def test_delete_role(iam, roles):
    name = roles()["RoleName"]
    assert status(iam.delete_role(RoleName=name)) == 200
    with raises(iam, "NoSuchEntity", 404):
        iam.get_role(RoleName=name)
    with raises(iam, "NoSuchEntity", 404):
        iam.delete_role(RoleName=name)


def test_create_role_validation(iam, iam_nv):
    doc = json.dumps(TRUST)
    cases = [
        dict(RoleName="bad name!", AssumeRolePolicyDocument=doc),
        dict(RoleName="r" * 65, AssumeRolePolicyDocument=doc),
        dict(RoleName="", AssumeRolePolicyDocument=doc),
        dict(RoleName=uname("r"), AssumeRolePolicyDocument=doc, Path="no-slashes"),
        dict(RoleName=uname("r"), AssumeRolePolicyDocument=doc, MaxSessionDuration=60),
        dict(RoleName=uname("r"), AssumeRolePolicyDocument=doc, MaxSessionDuration=43201),
        dict(RoleName=uname("r"), AssumeRolePolicyDocument=doc, Description="bell\x07"),
        dict(RoleName=uname("r"), AssumeRolePolicyDocument=doc, Tags=[{"Key": "bad!", "Value": "v"}]),
        dict(RoleName=uname("r")),
    ]
    for kw in cases:
        with raises(iam_nv, "ValidationError", 400) as caught:
            iam_nv.create_role(**kw)
        assert "validation error" in caught.value.response["Error"]["Message"], kw


def test_create_role_input_and_limit_errors(iam):
    doc = json.dumps(TRUST)
    with raises(iam, "InvalidInput", 400):
        iam.create_role(RoleName=uname("r"), AssumeRolePolicyDocument=doc,
                        Tags=[{"Key": "Team", "Value": "a"}, {"Key": "team", "Value": "b"}])
    with raises(iam, "LimitExceeded", 409):
        iam.create_role(RoleName=uname("r"), AssumeRolePolicyDocument=doc,
                        Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])


@pytest.mark.parametrize("doc", [
    "not json",
    "[]",
    json.dumps({"Version": "2012-10-17"}),
    json.dumps({"Version": "1999-01-01", "Statement": TRUST["Statement"]}),
    json.dumps({"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "sts:AssumeRole"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole", "Resource": "*"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]}),
])
def test_malformed_trust_policies(iam, doc):
    with raises(iam, "MalformedPolicyDocument", 400):
        iam.create_role(RoleName=uname("r"), AssumeRolePolicyDocument=doc)


# ---------------------------------------------------------------------------------------------
# Managed policies
# ---------------------------------------------------------------------------------------------


def test_attach_list_detach(iam, roles):
    name = roles()["RoleName"]
    assert status(iam.attach_role_policy(RoleName=name, PolicyArn=POLICY_ARN)) == 200
    assert status(iam.attach_role_policy(RoleName=name, PolicyArn=POLICY_ARN)) == 200, "attaching again is a no-op"
    attached = iam.list_attached_role_policies(RoleName=name)
    assert attached["AttachedPolicies"] == [{"PolicyName": POLICY_NAME, "PolicyArn": POLICY_ARN}]
    assert attached["IsTruncated"] is False
    assert iam.list_attached_role_policies(RoleName=name, PathPrefix="/")["AttachedPolicies"]
    assert iam.list_attached_role_policies(RoleName=name, PathPrefix="/service-role/")["AttachedPolicies"] == []
    page = iam.list_attached_role_policies(RoleName=name, MaxItems=1)
    assert len(page["AttachedPolicies"]) == 1 and page["IsTruncated"] is False
    assert status(iam.detach_role_policy(RoleName=name, PolicyArn=POLICY_ARN)) == 200
    assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
    with raises(iam, "NoSuchEntity", 404):
        iam.detach_role_policy(RoleName=name, PolicyArn=POLICY_ARN)


def test_delete_conflict_while_attached(iam, roles):
    name = roles()["RoleName"]
    iam.attach_role_policy(RoleName=name, PolicyArn=POLICY_ARN)
    with raises(iam, "DeleteConflict", 409):
        iam.delete_role(RoleName=name)
    iam.detach_role_policy(RoleName=name, PolicyArn=POLICY_ARN)
    assert status(iam.delete_role(RoleName=name)) == 200


def test_attach_errors(iam, iam_nv, roles):
    name = roles()["RoleName"]
    with raises(iam, "NoSuchEntity", 404):
        iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    with raises(iam, "NoSuchEntity", 404) as caught:
        iam.attach_role_policy(RoleName=name, PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/mine")
    assert "CreatePolicy" in caught.value.response["Error"]["Message"]
    with raises(iam, "InvalidInput", 400):
        iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:s3:::some-bucket-name")
    with raises(iam_nv, "ValidationError", 400):
        iam_nv.attach_role_policy(RoleName=name, PolicyArn="short")
    with raises(iam, "NoSuchEntity", 404):
        iam.attach_role_policy(RoleName=uname("nobody"), PolicyArn=POLICY_ARN)
    with raises(iam, "NoSuchEntity", 404):
        iam.detach_role_policy(RoleName=uname("nobody"), PolicyArn=POLICY_ARN)
    with raises(iam, "NoSuchEntity", 404):
        iam.list_attached_role_policies(RoleName=uname("nobody"))
    with raises(iam, "ValidationError", 400):
        iam.list_attached_role_policies(RoleName=name, PathPrefix="nope")


def test_iam_is_global(endpoint, roles):
    """A role made through one region's client is seen through another's."""
    name = roles()["RoleName"]
    other = make_client("iam", endpoint, region="eu-west-1")
    assert other.get_role(RoleName=name)["Role"]["RoleName"] == name


def test_unknown_action(endpoint):
    resp = raw_request(endpoint, "POST", "/", body="Action=CreateGroup&Version=2010-05-08&GroupName=x",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}, service="iam")
    assert resp.status == 400
    body = resp.body.decode() if isinstance(resp.body, bytes) else resp.body
    assert "<Code>InvalidAction</Code>" in body and "<ErrorResponse" in body


# ---------------------------------------------------------------------------------------------
# The aws CLI
# ---------------------------------------------------------------------------------------------


def find_aws():
    beside = Path(sys.executable).parent / "aws"
    return str(beside) if beside.exists() else shutil.which("aws")


def test_cli_create_role_and_attach(endpoint, iam, tmp_path):
    aws = find_aws()
    assert aws, "the aws CLI v1 is required (pip install -r conformance/requirements.txt)"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret",
               AWS_DEFAULT_REGION="us-east-1", PATH=f"{Path(aws).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(TRUST, indent=2) + "\n")
    name = uname("cli-role")

    def cli(*args):
        proc = subprocess.run([aws, "--endpoint-url", endpoint, "--output", "json", "iam", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"aws iam {args[0]} failed: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    try:
        role = cli("create-role", "--role-name", name, "--assume-role-policy-document", f"file://{trust}")["Role"]
        assert role["RoleName"] == name and role["AssumeRolePolicyDocument"] == TRUST
        cli("attach-role-policy", "--role-name", name, "--policy-arn", POLICY_ARN)
        listed = cli("list-attached-role-policies", "--role-name", name)
        assert listed["AttachedPolicies"] == [{"PolicyName": POLICY_NAME, "PolicyArn": POLICY_ARN}]
        assert cli("get-role", "--role-name", name)["Role"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/{name}"
        cli("detach-role-policy", "--role-name", name, "--policy-arn", POLICY_ARN)
        cli("delete-role", "--role-name", name)
    finally:
        try:
            iam.detach_role_policy(RoleName=name, PolicyArn=POLICY_ARN)
        except Exception:
            pass
        try:
            iam.delete_role(RoleName=name)
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# Users, access keys and tags (issue 7, item 1: "Identities")
# --------------------------------------------------------------------------------------------

USER_ID_RE = r"^AIDA[A-Z0-9]{17}$"


@pytest.fixture
def users(iam):
    """Creates users (unique names) and deletes them, with their access keys, when the test ends."""
    made = []

    def create(name=None, **kw):
        name = name or uname("user")
        user = iam.create_user(UserName=name, **kw)["User"]
        made.append(name)
        return user

    yield create
    for name in made:
        try:
            for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
                iam.delete_access_key(UserName=name, AccessKeyId=k["AccessKeyId"])
            iam.delete_user(UserName=name)
        except iam.exceptions.NoSuchEntityException:
            pass


def test_create_get_list_delete_user(iam, users):
    name = uname("user")
    user = users(name, Path="/eng/", Tags=[{"Key": "team", "Value": "net"}])
    assert user["UserName"] == name and user["Path"] == "/eng/"
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/eng/{name}"
    assert re.match(USER_ID_RE, user["UserId"]), user["UserId"]
    assert_timestamp(user["CreateDate"], "CreateDate")
    assert user["Tags"] == [{"Key": "team", "Value": "net"}]
    got = iam.get_user(UserName=name.upper())["User"]
    assert got["UserId"] == user["UserId"] and got["UserName"] == name
    listed = iam.list_users(PathPrefix="/eng/")["Users"]
    assert [u["UserName"] for u in listed if u["UserName"] == name] == [name]
    assert "Tags" not in [u for u in listed if u["UserName"] == name][0]
    assert name not in [u["UserName"] for u in iam.list_users(PathPrefix="/other/")["Users"]]
    iam.delete_user(UserName=name)
    with raises(iam, "NoSuchEntity", 404):
        iam.get_user(UserName=name)
    with raises(iam, "NoSuchEntity", 404):
        iam.delete_user(UserName=name)


def test_user_errors(iam, iam_nv, users):
    name = users()["UserName"]
    with raises(iam, "EntityAlreadyExists", 409):
        iam.create_user(UserName=name.upper())
    with raises(iam_nv, "ValidationError", 400):
        iam_nv.create_user(UserName="has space")
    with raises(iam_nv, "ValidationError", 400):
        iam_nv.create_user(UserName="u" * 65)
    with raises(iam, "InvalidInput", 400):
        iam.create_user(UserName=uname("user"), Tags=[{"Key": "aws:x", "Value": "y"}])
    with raises(iam, "LimitExceeded", 409):
        iam.create_user(UserName=uname("user"), Tags=[{"Key": f"k{i}", "Value": ""} for i in range(51)])


def test_get_user_without_a_name_is_the_caller(iam):
    # The suite's key is not one Trellis issued: the caller is the account's root.
    user = iam.get_user()["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:root" and user["UserId"] == ACCOUNT


def test_access_keys(iam, users, endpoint):
    name = users()["UserName"]
    keys = [iam.create_access_key(UserName=name)["AccessKey"] for _ in range(2)]
    for k in keys:
        assert k["UserName"] == name and k["Status"] == "Active"
        assert re.match(r"^AKIA[A-Z0-9]{16}$", k["AccessKeyId"]), k["AccessKeyId"]
        assert len(k["SecretAccessKey"]) == 40
        assert_timestamp(k["CreateDate"], "CreateDate")
    with raises(iam, "LimitExceeded", 409):
        iam.create_access_key(UserName=name)
    listed = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert sorted(k["AccessKeyId"] for k in listed) == sorted(k["AccessKeyId"] for k in keys)
    assert all("SecretAccessKey" not in k and k["UserName"] == name for k in listed)
    with raises(iam, "DeleteConflict", 409):
        iam.delete_user(UserName=name)
    # The key signs as the user: CreateAccessKey without a name makes one for the caller.
    as_user = boto3_client("iam", endpoint, keys[0])
    assert as_user.get_user()["User"]["UserName"] == name
    assert [k["AccessKeyId"] for k in as_user.list_access_keys()["AccessKeyMetadata"]] == \
        [k["AccessKeyId"] for k in listed]
    iam.delete_access_key(UserName=name, AccessKeyId=keys[0]["AccessKeyId"])
    with raises(iam, "NoSuchEntity", 404):
        iam.delete_access_key(UserName=name, AccessKeyId=keys[0]["AccessKeyId"])
    assert len(iam.list_access_keys(UserName=name)["AccessKeyMetadata"]) == 1
    iam.delete_access_key(UserName=name, AccessKeyId=keys[1]["AccessKeyId"])
    iam.delete_user(UserName=name)
    with raises(iam, "NoSuchEntity", 404):
        iam.create_access_key(UserName=name)
    with raises(iam, "NoSuchEntity", 404):
        iam.list_access_keys(UserName=name)


def test_tag_and_untag_roles_and_users(iam, roles, users):
    role = roles(Tags=[{"Key": "team", "Value": "a"}])["RoleName"]
    iam.tag_role(RoleName=role, Tags=[{"Key": "TEAM", "Value": "b"}, {"Key": "env", "Value": "dev"}])
    assert iam.list_role_tags(RoleName=role)["Tags"] == [{"Key": "TEAM", "Value": "b"}, {"Key": "env", "Value": "dev"}]
    assert iam.get_role(RoleName=role)["Role"]["Tags"] == iam.list_role_tags(RoleName=role)["Tags"]
    page = iam.list_role_tags(RoleName=role, MaxItems=1)
    assert page["IsTruncated"] and len(page["Tags"]) == 1
    rest = iam.list_role_tags(RoleName=role, Marker=page["Marker"])
    assert rest["Tags"] == [{"Key": "env", "Value": "dev"}] and not rest["IsTruncated"]
    iam.untag_role(RoleName=role, TagKeys=["team", "absent"])
    assert iam.list_role_tags(RoleName=role)["Tags"] == [{"Key": "env", "Value": "dev"}]
    with raises(iam, "LimitExceeded", 409):
        iam.tag_role(RoleName=role, Tags=[{"Key": f"k{i}", "Value": ""} for i in range(50)])
    with raises(iam, "InvalidInput", 400):
        iam.tag_role(RoleName=role, Tags=[{"Key": "aws:reserved", "Value": ""}])
    with raises(iam, "NoSuchEntity", 404):
        iam.tag_role(RoleName=uname("missing"), Tags=[{"Key": "k", "Value": "v"}])
    with raises(iam, "NoSuchEntity", 404):
        iam.list_role_tags(RoleName=uname("missing"))

    user = users()["UserName"]
    iam.tag_user(UserName=user, Tags=[{"Key": "cost", "Value": "1"}])
    assert iam.list_user_tags(UserName=user)["Tags"] == [{"Key": "cost", "Value": "1"}]
    assert iam.get_user(UserName=user)["User"]["Tags"] == [{"Key": "cost", "Value": "1"}]
    iam.untag_user(UserName=user, TagKeys=["COST"])
    assert iam.list_user_tags(UserName=user)["Tags"] == []
    with raises(iam, "NoSuchEntity", 404):
        iam.untag_user(UserName=uname("missing"), TagKeys=["k"])


def boto3_client(service, endpoint, key):
    """A client signing with an access key (dict with AccessKeyId, SecretAccessKey, maybe SessionToken)."""
    import boto3

    from support import client_config
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
        aws_session_token=key.get("SessionToken"), config=client_config())
