"""`trellis serve --require-signature`: every AWS API call must be signed by an identity of the
account (the root key, a user's key, an STS session), and Trellis's own `/_trellis/` endpoints,
health aside, need the API token that `trellis credentials` prints. Refusals are the errors AWS
gives, in each service's protocol; the CLI finds the token and signs its calls."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import urllib.error
import urllib.request
from unittest import mock

import boto3
import botocore
import pytest
from botocore.config import Config

from support import REGION, client_config, raw_request, require_binary, uname

SERVICES = ("vpc-lattice", "ec2", "ecs", "acm", "iam", "sts")


@pytest.fixture
def strict(server_factory):
    """A server that requires signatures, with its token and root key."""
    srv = server_factory(env={"TRELLIS_REQUIRE_SIGNATURE": "1"})
    token = (srv.data_dir / "api-token").read_text().strip()
    creds = get_json(srv.endpoint, "/_trellis/credentials", token)
    return srv, token, creds


def get(endpoint: str, path: str, token: str | None = None):
    """(status, headers, body) of a GET, with the token as a bearer token if given."""
    req = urllib.request.Request(f"{endpoint}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get_json(endpoint: str, path: str, token: str) -> dict:
    status, _, body = get(endpoint, path, token)
    assert status == 200, (status, body)
    return json.loads(body)


def client(service: str, endpoint: str, key: str | None, secret: str | None, token: str | None = None):
    extra = {} if key else {"signature_version": botocore.UNSIGNED}
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key or "x",
        aws_secret_access_key=secret or "x", aws_session_token=token, config=client_config(**extra))


def one_call(service: str, c):
    """A harmless call of each service."""
    return {
        "vpc-lattice": lambda: c.list_service_networks(),
        "ec2": lambda: c.describe_vpcs(),
        "ecs": lambda: c.list_clusters(),
        "acm": lambda: c.list_certificates(),
        "iam": lambda: c.list_users(),
        "sts": lambda: c.get_caller_identity(),
    }[service]()


def refused(service: str, c) -> tuple[str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        one_call(service, c)
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_signed_calls_of_every_service_are_served(strict):
    srv, _, creds = strict
    key, secret = creds["accessKeyId"], creds["secretAccessKey"]
    for service in SERVICES:
        one_call(service, client(service, srv.endpoint, key, secret))
    sn = client("vpc-lattice", srv.endpoint, key, secret).create_service_network(name=uname("sn"))
    assert sn["id"].startswith("sn-")
    vpc = client("ec2", srv.endpoint, key, secret).create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]
    assert vpc["VpcId"].startswith("vpc-")
    me = client("sts", srv.endpoint, key, secret).get_caller_identity()
    assert me["Arn"] == f"arn:aws:iam::{creds['account']}:root"


def test_each_refusal_is_the_error_aws_gives(strict):
    srv, _, creds = strict
    key = creds["accessKeyId"]
    want = {
        # service: (unsigned, unknown key, wrong secret)
        "vpc-lattice": (("MissingAuthenticationTokenException", 403), ("UnrecognizedClientException", 403),
                        ("InvalidSignatureException", 403)),
        "ecs": (("MissingAuthenticationTokenException", 403), ("UnrecognizedClientException", 403),
                ("InvalidSignatureException", 403)),
        "acm": (("MissingAuthenticationTokenException", 403), ("UnrecognizedClientException", 403),
                ("InvalidSignatureException", 403)),
        "ec2": (("MissingAuthenticationToken", 401), ("AuthFailure", 401), ("SignatureDoesNotMatch", 403)),
        "iam": (("MissingAuthenticationToken", 403), ("InvalidClientTokenId", 403), ("SignatureDoesNotMatch", 403)),
        "sts": (("MissingAuthenticationToken", 403), ("InvalidClientTokenId", 403), ("SignatureDoesNotMatch", 403)),
    }
    for service, (unsigned, unknown, mismatch) in want.items():
        assert refused(service, client(service, srv.endpoint, None, None)) == unsigned, service
        assert refused(service, client(service, srv.endpoint, "AKIAUNKNOWNKEY000000", "x")) == unknown, service
        assert refused(service, client(service, srv.endpoint, key, "not-the-secret")) == mismatch, service


def test_stale_dates_tampered_bodies_and_bad_tokens_are_refused(strict):
    srv, _, creds = strict
    key, secret = creds["accessKeyId"], creds["secretAccessKey"]
    lattice = client("vpc-lattice", srv.endpoint, key, secret)
    ec2 = client("ec2", srv.endpoint, key, secret)
    # Signed 20 minutes ago: outside the 15-minute window.
    past = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", lambda: past):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lattice.list_service_networks()
        assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert "Signature expired" in e.value.response["Error"]["Message"]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_vpcs()
        assert e.value.response["Error"]["Code"] == "RequestExpired"
    # 10 minutes ago is inside it.
    recent = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", lambda: recent):
        lattice.list_service_networks()
    # A body changed after signing does not verify (the API signs its payloads).
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    body = json.dumps({"name": uname("sn")}).encode()
    req = AWSRequest(method="POST", url=f"{srv.endpoint}/servicenetworks", data=body,
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, secret), "vpc-lattice", REGION).add_auth(req)
    headers = dict(req.headers.items())
    ok = raw_request(srv.endpoint, "POST", "/servicenetworks", body, headers=headers, sign=False)
    assert ok.status == 201, ok
    tampered = body.replace(b'"name": "', b'"name": "x')
    r = raw_request(srv.endpoint, "POST", "/servicenetworks", tampered, headers=headers, sign=False)
    assert (r.status, r.error_type()) == (403, "InvalidSignatureException"), r
    # A session key without its token, or with another, is not a credential.
    iam = client("iam", srv.endpoint, key, secret)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"AWS": f"arn:aws:iam::{creds['account']}:root"}}]}
    role = iam.create_role(RoleName=uname("role"), AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    session = client("sts", srv.endpoint, key, secret).assume_role(
        RoleArn=role["Arn"], RoleSessionName="s1")["Credentials"]
    sk, ss, st = session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"]
    me = client("sts", srv.endpoint, sk, ss, st).get_caller_identity()
    assert me["Arn"].endswith(f":assumed-role/{role['RoleName']}/s1"), me
    client("ecs", srv.endpoint, sk, ss, st).list_clusters()
    assert refused("sts", client("sts", srv.endpoint, sk, ss)) == ("InvalidClientTokenId", 403)
    assert refused("ecs", client("ecs", srv.endpoint, sk, ss, st[:-4] + "AAAA")) == (
        "UnrecognizedClientException", 403)


def test_trellis_endpoints_need_the_token(strict):
    srv, token, _ = strict
    status, _, body = get(srv.endpoint, "/_trellis/health")
    assert (status, body) == (200, b"ok\n")
    for path in ("/_trellis/ca", "/_trellis/credentials", "/_trellis/vpcs/vpc-0123456789abcdef0/ingress"):
        status, headers, body = get(srv.endpoint, path)
        assert status == 401, (path, status, body)
        assert headers.get("www-authenticate", "").startswith("Bearer"), headers
        assert b"trellis credentials" in body
        assert get(srv.endpoint, path, token + "x")[0] == 401, path
    status, _, body = get(srv.endpoint, "/_trellis/ca", token)
    assert status == 200 and body.startswith(b"-----BEGIN CERTIFICATE-----"), body[:40]
    # The token file is the installation's alone.
    assert (srv.data_dir / "api-token").stat().st_mode & 0o777 == 0o600


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRELLIS_", "AWS_"))}
    base.update(env or {})
    return subprocess.run([require_binary(), *args], capture_output=True, text=True, timeout=60, env=base,
                          stdin=subprocess.DEVNULL)


def test_the_cli_finds_the_token_and_signs(strict, tmp_path):
    srv, token, creds = strict
    name = uname("sn")
    client("vpc-lattice", srv.endpoint, creds["accessKeyId"], creds["secretAccessKey"]).create_service_network(
        name=name)
    # From the data directory (as the server's own user on the same machine would).
    done = cli("status", "--endpoint", srv.endpoint, "--data-dir", str(srv.data_dir))
    assert done.returncode == 0, done.stderr
    assert name in done.stdout
    # From TRELLIS_TOKEN, and `trellis credentials` prints what the aws CLI and Trellis need.
    done = cli("credentials", "--endpoint", srv.endpoint, env={"TRELLIS_TOKEN": token})
    assert done.returncode == 0, done.stderr
    printed = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines()
                   if line.startswith("export "))
    assert printed == {"AWS_ACCESS_KEY_ID": creds["accessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["secretAccessKey"],
                       "TRELLIS_TOKEN": token}
    # The aws CLI with those credentials.
    aws_env = {"AWS_ACCESS_KEY_ID": creds["accessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["secretAccessKey"],
               "AWS_DEFAULT_REGION": REGION, "HOME": str(tmp_path)}
    done = subprocess.run(["aws", "vpc-lattice", "list-service-networks", "--endpoint-url", srv.endpoint],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **aws_env})
    assert done.returncode == 0, done.stderr
    assert name in done.stdout
    # Without the token the CLI says what is missing.
    done = cli("status", "--endpoint", srv.endpoint, "--data-dir", str(tmp_path))
    assert done.returncode != 0
    assert "TRELLIS_TOKEN" in done.stderr, done.stderr
    done = cli("ca", "--endpoint", srv.endpoint, "--token", "trellis-wrong")
    assert done.returncode != 0 and "API token" in done.stderr, done.stderr


def test_without_the_flag_unsigned_calls_and_trellis_endpoints_stay_open(server_factory):
    srv = server_factory()
    one_call("vpc-lattice", client("vpc-lattice", srv.endpoint, None, None))
    assert get(srv.endpoint, "/_trellis/ca")[0] == 200
    # The token exists anyway (the console signs in with it) and `trellis credentials` prints it.
    token = (srv.data_dir / "api-token").read_text().strip()
    done = cli("credentials", "--endpoint", srv.endpoint, "--data-dir", str(srv.data_dir))
    assert done.returncode == 0 and f"export TRELLIS_TOKEN={token}" in done.stdout, done
