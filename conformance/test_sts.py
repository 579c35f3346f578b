"""STS (query protocol, Version=2011-06-15): GetCallerIdentity and AssumeRole of the account's
roles, checked against their trust policies; the root access key `trellis credentials` prints
(issue 7, item 1: "Identities")."""

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest
from botocore import UNSIGNED

from support import ACCOUNT, TRELLIS_BIN, client_config, make_client, raises, uname
from test_iam import boto3_client, find_aws

ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"


def trust(principal, action="sts:AssumeRole", **extra):
    statement = {"Effect": "Allow", "Principal": principal, "Action": action, **extra}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture(scope="module")
def sts(endpoint):
    return make_client("sts", endpoint)


@pytest.fixture(scope="module")
def sts_nv(endpoint):
    return make_client("sts", endpoint, parameter_validation=False)


@pytest.fixture(scope="module")
def iam(endpoint):
    return make_client("iam", endpoint)


@pytest.fixture
def roles(iam):
    made = []

    def create(principal, name=None, **kw):
        name = name or uname("role")
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust(principal), **kw)["Role"]
        made.append(name)
        return role

    yield create
    for name in made:
        try:
            iam.delete_role(RoleName=name)
        except iam.exceptions.NoSuchEntityException:
            pass


@pytest.fixture
def user_key(iam):
    """A user with an access key; deleted when the test ends."""
    made = []

    def create():
        name = uname("user")
        user = iam.create_user(UserName=name)["User"]
        made.append(name)
        return user, iam.create_access_key(UserName=name)["AccessKey"]

    yield create
    for name in made:
        for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=name, AccessKeyId=k["AccessKeyId"])
        iam.delete_user(UserName=name)


def test_get_caller_identity_of_unknown_and_unsigned_callers_is_the_root(sts, endpoint):
    for client in (sts, make_client("sts", endpoint, signature_version=UNSIGNED)):
        who = client.get_caller_identity()
        assert who["Arn"] == ROOT_ARN and who["Account"] == ACCOUNT and who["UserId"] == ACCOUNT
        assert who["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_get_caller_identity_of_a_user(endpoint, user_key):
    user, key = user_key()
    who = boto3_client("sts", endpoint, key).get_caller_identity()
    assert who["Arn"] == user["Arn"] and who["UserId"] == user["UserId"] and who["Account"] == ACCOUNT


def test_assume_role(sts, roles, endpoint):
    role = roles({"AWS": ACCOUNT}, MaxSessionDuration=7200, Tags=[{"Key": "team", "Value": "net"}])
    before = dt.datetime.now(dt.timezone.utc)
    out = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="my-session@x", DurationSeconds=7200)
    creds, user = out["Credentials"], out["AssumedRoleUser"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert len(creds["SecretAccessKey"]) == 40 and creds["SessionToken"]
    expires = creds["Expiration"]
    assert expires.tzinfo is not None
    assert dt.timedelta(seconds=7190) <= expires - before <= dt.timedelta(seconds=7210), expires
    assert user["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role['RoleName']}/my-session@x"
    assert user["AssumedRoleId"] == f"{role['RoleId']}:my-session@x"
    # The temporary credentials sign as the session.
    who = boto3_client("sts", endpoint, creds).get_caller_identity()
    assert who["Arn"] == user["Arn"] and who["UserId"] == user["AssumedRoleId"] and who["Account"] == ACCOUNT
    # Default duration: one hour.
    out = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="default")
    left = out["Credentials"]["Expiration"] - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(seconds=3500) <= left <= dt.timedelta(seconds=3610), left


def test_session_token_must_come_with_the_key(sts, roles, endpoint):
    role = roles("*")
    creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1")["Credentials"]
    without = dict(creds)
    del without["SessionToken"]
    with raises(sts, "InvalidClientTokenId", 403):
        boto3_client("sts", endpoint, without).get_caller_identity()
    with raises(sts, "InvalidClientTokenId", 403):
        boto3_client("sts", endpoint, dict(creds, SessionToken="not-the-token")).get_caller_identity()


def test_trust_policy_decides(sts, roles, endpoint, user_key):
    user, key = user_key()
    as_user = boto3_client("sts", endpoint, key)
    by_user = roles({"AWS": user["Arn"]})
    by_root = roles({"AWS": ROOT_ARN})
    by_service = roles({"Service": "ecs.amazonaws.com"})
    by_other_account = roles({"AWS": "111122223333"})
    # The user is named; the root is not.
    assert as_user.assume_role(RoleArn=by_user["Arn"], RoleSessionName="u1")["AssumedRoleUser"]
    with raises(sts, "AccessDenied", 403) as e:
        sts.assume_role(RoleArn=by_user["Arn"], RoleSessionName="r1")
    assert f"User: {ROOT_ARN} is not authorized to perform: sts:AssumeRole" in str(e.value)
    # The account (as its root ARN) trusts every identity of the account.
    assert sts.assume_role(RoleArn=by_root["Arn"], RoleSessionName="r1")["Credentials"]
    assert as_user.assume_role(RoleArn=by_root["Arn"], RoleSessionName="u1")["Credentials"]
    for role in (by_service, by_other_account):
        with raises(sts, "AccessDenied", 403):
            sts.assume_role(RoleArn=role["Arn"], RoleSessionName="r1")
    with raises(sts, "AccessDenied", 403):
        sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{uname('missing')}", RoleSessionName="r1")
    with raises(sts, "AccessDenied", 403):
        sts.assume_role(RoleArn=f"arn:aws:iam::111122223333:role/{by_root['RoleName']}", RoleSessionName="r1")


def test_role_chaining(sts, roles, endpoint):
    first = roles({"AWS": ACCOUNT})
    second = roles({"AWS": first["Arn"]})
    creds = sts.assume_role(RoleArn=first["Arn"], RoleSessionName="one")["Credentials"]
    as_session = boto3_client("sts", endpoint, creds)
    out = as_session.assume_role(RoleArn=second["Arn"], RoleSessionName="two")
    assert out["AssumedRoleUser"]["Arn"].endswith(f"assumed-role/{second['RoleName']}/two")
    with raises(sts, "ValidationError", 400) as e:
        as_session.assume_role(RoleArn=second["Arn"], RoleSessionName="two", DurationSeconds=3601)
    assert "role chaining" in str(e.value)
    with raises(sts, "AccessDenied", 403):
        sts.assume_role(RoleArn=second["Arn"], RoleSessionName="root")


def test_assume_role_validation(sts, sts_nv, roles):
    role = roles("*")
    with raises(sts, "ValidationError", 400) as e:
        sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1", DurationSeconds=3601)
    assert "MaxSessionDuration" in str(e.value)
    for duration, wanted in ((899, "greater than or equal to 900"), (43201, "less than or equal to 43200")):
        with raises(sts_nv, "ValidationError", 400) as e:
            sts_nv.assume_role(RoleArn=role["Arn"], RoleSessionName="s1", DurationSeconds=duration)
        assert wanted in str(e.value)
    for session in ("x", "has space", "s" * 65, "slash/no"):
        with raises(sts_nv, "ValidationError", 400) as e:
            sts_nv.assume_role(RoleArn=role["Arn"], RoleSessionName=session)
        assert "roleSessionName" in str(e.value)
    with raises(sts_nv, "ValidationError", 400):
        sts_nv.assume_role(RoleArn="short", RoleSessionName="s1")
    with raises(sts_nv, "ValidationError", 400):
        sts_nv.assume_role(RoleArn="not an arn, but long enough", RoleSessionName="s1")


def test_session_ends_with_its_role(sts, iam, roles, endpoint):
    role = roles("*")
    creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1")["Credentials"]
    iam.delete_role(RoleName=role["RoleName"])
    # The key no longer stands for anyone: the caller is the root again (unverified calls).
    assert boto3_client("sts", endpoint, creds).get_caller_identity()["Arn"] == ROOT_ARN


def test_trellis_credentials_prints_the_root_key(endpoint):
    proc = subprocess.run([TRELLIS_BIN, "credentials", "--endpoint", endpoint], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    exported = dict(line.removeprefix("export ").split("=", 1) for line in proc.stdout.splitlines()
                    if line.startswith("export "))
    assert exported["AWS_ACCESS_KEY_ID"].startswith("AKIA") and len(exported["AWS_SECRET_ACCESS_KEY"]) == 40
    # The same key every time (it is stored), and usable by boto3 and the aws CLI.
    again = subprocess.run([TRELLIS_BIN, "credentials", "--endpoint", endpoint], capture_output=True, text=True,
                           timeout=30)
    assert again.stdout == proc.stdout
    key = {"AccessKeyId": exported["AWS_ACCESS_KEY_ID"], "SecretAccessKey": exported["AWS_SECRET_ACCESS_KEY"]}
    assert boto3_client("sts", endpoint, key).get_caller_identity()["Arn"] == ROOT_ARN
    root_keys = boto3_client("iam", endpoint, key).list_access_keys()["AccessKeyMetadata"]
    assert exported["AWS_ACCESS_KEY_ID"] in [k["AccessKeyId"] for k in root_keys]
    aws = find_aws()
    assert aws, "the aws CLI v1 is required (pip install -r conformance/requirements.txt)"
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", **exported,
               PATH=f"{Path(aws).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    out = subprocess.run([aws, "--endpoint-url", endpoint, "--output", "json", "sts", "get-caller-identity"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"UserId": ACCOUNT, "Account": ACCOUNT, "Arn": ROOT_ARN}


def test_cli_assume_role(endpoint, roles):
    role = roles({"AWS": ACCOUNT})
    aws = find_aws()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret",
               AWS_DEFAULT_REGION="us-east-1", PATH=f"{Path(aws).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    out = subprocess.run([aws, "--endpoint-url", endpoint, "--output", "json", "sts", "assume-role", "--role-arn",
                          role["Arn"], "--role-session-name", "cli", "--duration-seconds", "900"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role['RoleName']}/cli"
    assert answer["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert answer["Credentials"]["Expiration"]


def test_unknown_sts_action(sts_nv, endpoint):
    import urllib.request
    req = urllib.request.Request(endpoint + "/", data=b"Action=GetSessionToken&Version=2011-06-15",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10)
        raise AssertionError("GetSessionToken is not served")
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        assert e.code == 400 and "<Code>InvalidAction</Code>" in body, body
        assert 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"' in body, body


def test_root_key_is_made_at_first_start_and_kept(server_factory):
    srv = server_factory()
    # Made at start, before anyone asks for it: the root's keys already list it.
    listed = srv.client("iam").list_access_keys()["AccessKeyMetadata"]
    assert len(listed) == 1 and listed[0]["AccessKeyId"].startswith("AKIA") and "UserName" not in listed[0]
    first = subprocess.run([TRELLIS_BIN, "credentials", "--endpoint", srv.endpoint], capture_output=True,
                           text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert f"export AWS_ACCESS_KEY_ID={listed[0]['AccessKeyId']}" in first.stdout
    srv.stop()
    srv.start()
    again = subprocess.run([TRELLIS_BIN, "credentials", "--endpoint", srv.endpoint], capture_output=True,
                           text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
