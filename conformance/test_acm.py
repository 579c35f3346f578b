"""ACM (JSON 1.1) through boto3's `acm` client and the aws CLI: ImportCertificate,
RequestCertificate, DescribeCertificate, GetCertificate, ListCertificates, DeleteCertificate and
the certificate tags, their errors, and a VPC Lattice service's use of a certificate.

Test certificates are made with the openssl command line. ACM answers every client error with
HTTP 400 and a `message`.
"""

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from support import ACCOUNT, REGION, import_certificate, make_ca, make_certificate, uname
from test_cli_scenario import find_aws

ARN_RE = re.compile(rf"^arn:aws:acm:{REGION}:{ACCOUNT}:certificate/[0-9a-f]{{8}}(-[0-9a-f]{{4}}){{3}}-[0-9a-f]{{12}}$")
ABSENT = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/12345678-1234-1234-1234-123456789012"
EC = {"keyTypes": ["EC_prime256v1"]}


class acm_raises:
    """`with acm_raises(acm, "ResourceNotFoundException") as e: ...`: the block must fail with that
    modelled exception, HTTP 400 and a message (`e.message`)."""

    def __init__(self, client, code):
        self.client, self.code, self.message = client, code, None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        assert exc is not None, f"expected {self.code}, but the call succeeded"
        assert isinstance(exc, ClientError), exc
        err = exc.response["Error"]
        assert err["Code"] == self.code, f"expected {self.code}, got {err}"
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400, exc.response["ResponseMetadata"]
        assert err.get("Message"), f"{self.code} carries no message"
        modelled = getattr(self.client.exceptions, self.code, None)
        assert modelled is None or isinstance(exc, modelled), type(exc)
        self.message = err["Message"]
        return True


def verify_chain(leaf: str, chain: str) -> None:
    """openssl verifies `leaf` against `chain` (its issuers, trusted)."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "leaf.pem").write_text(leaf)
        (Path(d) / "chain.pem").write_text(chain)
        proc = subprocess.run(["openssl", "verify", "-CAfile", "chain.pem", "leaf.pem"], cwd=d,
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def listed(acm, **kwargs):
    """Every summary ListCertificates gives, following NextToken; tokens never repeat."""
    out, seen, token = [], set(), None
    while True:
        args = dict(kwargs)
        if token:
            args["NextToken"] = token
        page = acm.list_certificates(**args)
        out.extend(page["CertificateSummaryList"])
        token = page.get("NextToken")
        if not token:
            return out
        assert token not in seen
        seen.add(token)


def test_import_describe_get_delete(acm):
    ca = make_ca("Conformance CA")
    name = f"{uname('www')}.example.com"
    c = make_certificate([name, f"alt.{name}"], key="ec", ca=ca)
    arn = acm.import_certificate(Certificate=c["cert"], PrivateKey=c["key"], CertificateChain=c["chain"],
                                 Tags=[{"Key": "team", "Value": "web"}])["CertificateArn"]
    assert ARN_RE.match(arn), arn

    d = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert d["CertificateArn"] == arn
    assert d["DomainName"] == name
    assert d["SubjectAlternativeNames"] == [name, f"alt.{name}"]
    assert (d["Type"], d["Status"]) == ("IMPORTED", "ISSUED")
    assert d["Subject"] == f"CN={name}"
    assert d["Issuer"] == "Conformance CA"
    assert (d["KeyAlgorithm"], d["SignatureAlgorithm"]) == ("EC_prime256v1", "SHA256WITHECDSA")
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2})*", d["Serial"]), d["Serial"]
    assert d["NotBefore"] < d["ImportedAt"] < d["NotAfter"]
    assert d["InUseBy"] == []
    assert d["RenewalEligibility"] == "INELIGIBLE"
    assert {"Name": "TLS_WEB_SERVER_AUTHENTICATION", "OID": "1.3.6.1.5.5.7.3.1"} in d["ExtendedKeyUsages"]
    assert {"Name": "DIGITAL_SIGNATURE"} in d["KeyUsages"]
    assert "IssuedAt" not in d and "DomainValidationOptions" not in d

    got = acm.get_certificate(CertificateArn=arn)
    assert got["Certificate"].strip() == c["cert"].decode().strip()
    assert got["CertificateChain"].strip() == ca["cert"].decode().strip()
    verify_chain(got["Certificate"], got["CertificateChain"])
    assert acm.list_tags_for_certificate(CertificateArn=arn)["Tags"] == [{"Key": "team", "Value": "web"}]

    acm.delete_certificate(CertificateArn=arn)
    with acm_raises(acm, "ResourceNotFoundException") as e:
        acm.describe_certificate(CertificateArn=arn)
    assert arn in e.message
    with acm_raises(acm, "ResourceNotFoundException"):
        acm.get_certificate(CertificateArn=arn)
    with acm_raises(acm, "ResourceNotFoundException"):
        acm.delete_certificate(CertificateArn=arn)


@pytest.mark.parametrize("key", ["rsa", "rsa8", "ec", "ec8"])
def test_every_pem_key_form_imports(acm, key):
    arn = import_certificate(acm, [f"{uname('k')}.example.com"], key=key)
    d = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert d["KeyAlgorithm"] == ("RSA_2048" if key.startswith("rsa") else "EC_prime256v1")


def test_reimport_keeps_the_arn(acm):
    name = f"{uname('re')}.example.com"
    arn = import_certificate(acm, [name])
    acm.add_tags_to_certificate(CertificateArn=arn, Tags=[{"Key": "k", "Value": "v"}])
    fresh = make_certificate([name])
    again = acm.import_certificate(CertificateArn=arn, Certificate=fresh["cert"], PrivateKey=fresh["key"])
    assert again["CertificateArn"] == arn
    assert acm.get_certificate(CertificateArn=arn)["Certificate"].strip() == fresh["cert"].decode().strip()
    assert acm.list_tags_for_certificate(CertificateArn=arn)["Tags"] == [{"Key": "k", "Value": "v"}]
    with acm_raises(acm, "InvalidParameterException"):
        acm.import_certificate(CertificateArn=arn, Certificate=fresh["cert"], PrivateKey=fresh["key"],
                               Tags=[{"Key": "x"}])
    with acm_raises(acm, "ResourceNotFoundException"):
        acm.import_certificate(CertificateArn=ABSENT, Certificate=fresh["cert"], PrivateKey=fresh["key"])


def test_bad_imports_are_refused(acm):
    a = make_certificate([f"{uname('a')}.example.com"])
    b = make_certificate([f"{uname('b')}.example.com"])
    with acm_raises(acm, "ValidationException") as e:
        acm.import_certificate(Certificate=a["cert"], PrivateKey=b["key"])
    assert "does not match" in e.message
    with acm_raises(acm, "ValidationException") as e:
        acm.import_certificate(Certificate=a["cert"] + b["cert"], PrivateKey=a["key"])
    assert "more than one certificate" in e.message
    with acm_raises(acm, "ValidationException"):
        acm.import_certificate(Certificate=b"not a certificate", PrivateKey=a["key"])
    with acm_raises(acm, "ValidationException"):
        acm.import_certificate(Certificate=a["cert"], PrivateKey=b"not a key")
    # A chain that did not issue the certificate.
    issued = make_certificate([f"{uname('c')}.example.com"], ca=make_ca("One CA"))
    with acm_raises(acm, "ValidationException") as e:
        acm.import_certificate(Certificate=issued["cert"], PrivateKey=issued["key"],
                               CertificateChain=make_ca("Other CA")["cert"])
    assert "chain" in e.message
    with acm_raises(acm, "InvalidTagException"):
        acm.import_certificate(Certificate=a["cert"], PrivateKey=a["key"], Tags=[{"Key": "aws:reserved"}])


def test_request_certificate_is_issued_at_once(acm, endpoint):
    name = f"{uname('api')}.example.com"
    arn = acm.request_certificate(DomainName=name, SubjectAlternativeNames=[f"*.{name}"],
                                  ValidationMethod="DNS")["CertificateArn"]
    assert ARN_RE.match(arn), arn
    d = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert (d["Type"], d["Status"], d["KeyAlgorithm"]) == ("AMAZON_ISSUED", "ISSUED", "RSA_2048")
    assert d["SubjectAlternativeNames"] == [name, f"*.{name}"]
    assert d["Issuer"] == "Trellis"
    assert d["IssuedAt"] and d["CreatedAt"]
    assert [v["ValidationStatus"] for v in d["DomainValidationOptions"]] == ["SUCCESS", "SUCCESS"]
    got = acm.get_certificate(CertificateArn=arn)
    verify_chain(got["Certificate"], got["CertificateChain"])
    # The default listing holds RSA_2048 certificates.
    assert arn in [s["CertificateArn"] for s in listed(acm)]

    ec = acm.request_certificate(DomainName=name, KeyAlgorithm="EC_prime256v1",
                                 IdempotencyToken="conformance1")["CertificateArn"]
    assert acm.describe_certificate(CertificateArn=ec)["Certificate"]["KeyAlgorithm"] == "EC_prime256v1"
    again = acm.request_certificate(DomainName=name, KeyAlgorithm="EC_prime256v1", IdempotencyToken="conformance1")
    assert again["CertificateArn"] == ec, "the same idempotency token within an hour is the same request"


def test_bad_requests_are_refused(acm):
    with acm_raises(acm, "InvalidParameterException"):
        acm.request_certificate(DomainName="x.example.com", KeyAlgorithm="RSA_4096")
    with acm_raises(acm, "ValidationException"):
        acm.request_certificate(DomainName="no_dots_here")
    with acm_raises(acm, "LimitExceededException"):
        acm.request_certificate(DomainName="x.example.com",
                                SubjectAlternativeNames=[f"n{i}.example.com" for i in range(10)])
    with acm_raises(acm, "InvalidTagException"):
        acm.request_certificate(DomainName="x.example.com", Tags=[{"Key": "aws:x"}])


def test_arns_are_checked(acm):
    with acm_raises(acm, "ValidationException"):
        acm.describe_certificate(CertificateArn="this-is-not-an-arn-at-all")
    with acm_raises(acm, "InvalidArnException"):
        acm.describe_certificate(CertificateArn=f"arn:aws:acm:{REGION}:{ACCOUNT}:thing/12345678")
    with acm_raises(acm, "ResourceNotFoundException"):
        acm.get_certificate(CertificateArn=ABSENT)
    with acm_raises(acm, "ResourceNotFoundException"):
        acm.list_tags_for_certificate(CertificateArn=ABSENT.replace(REGION, "eu-west-1"))


def test_tags(acm):
    arn = import_certificate(acm, [f"{uname('t')}.example.com"])
    acm.add_tags_to_certificate(CertificateArn=arn, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b"}])
    acm.add_tags_to_certificate(CertificateArn=arn, Tags=[{"Key": "a", "Value": "2"}])
    assert acm.list_tags_for_certificate(CertificateArn=arn)["Tags"] == [{"Key": "a", "Value": "2"}, {"Key": "b"}]
    # A tag named with a value goes only if the value matches; one named without goes anyway.
    acm.remove_tags_from_certificate(CertificateArn=arn, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b"}])
    assert acm.list_tags_for_certificate(CertificateArn=arn)["Tags"] == [{"Key": "a", "Value": "2"}]
    with acm_raises(acm, "InvalidTagException"):
        acm.add_tags_to_certificate(CertificateArn=arn, Tags=[{"Key": "aws:mine", "Value": "x"}])
    with acm_raises(acm, "TooManyTagsException"):
        acm.add_tags_to_certificate(CertificateArn=arn, Tags=[{"Key": f"k{i}"} for i in range(50)])
    with acm_raises(acm, "ResourceNotFoundException"):
        acm.add_tags_to_certificate(CertificateArn=ABSENT, Tags=[{"Key": "a"}])


def test_list_filters_and_pages(acm):
    mine = [import_certificate(acm, [f"{uname('p')}.example.com"]) for _ in range(5)]
    rsa = import_certificate(acm, [f"{uname('r')}.example.com"], key="rsa")
    # Without keyTypes, ACM lists RSA_1024 and RSA_2048 certificates only.
    default = [s["CertificateArn"] for s in listed(acm)]
    assert rsa in default and not set(mine) & set(default)

    pages = acm.get_paginator("list_certificates").paginate(Includes=EC, PaginationConfig={"PageSize": 2})
    seen = []
    for page in pages:
        assert len(page["CertificateSummaryList"]) <= 2
        seen.extend(s["CertificateArn"] for s in page["CertificateSummaryList"])
    assert len(seen) == len(set(seen)), "no certificate twice"
    assert [a for a in seen if a in mine] == mine, "oldest first"

    newest = acm.list_certificates(Includes=EC, SortBy="CREATED_AT", SortOrder="DESCENDING", MaxItems=1)
    assert newest["CertificateSummaryList"][0]["CertificateArn"] == mine[-1]
    assert newest.get("NextToken")

    summary = next(s for s in listed(acm, Includes=EC, CertificateStatuses=["ISSUED"]) if s["CertificateArn"] == mine[0])
    assert (summary["Status"], summary["Type"], summary["InUse"]) == ("ISSUED", "IMPORTED", False)
    assert summary["KeyAlgorithm"] == "EC_prime256v1" and summary["SubjectAlternativeNameSummaries"]
    assert listed(acm, Includes=EC, CertificateStatuses=["EXPIRED"]) == []

    with acm_raises(acm, "InvalidArgsException"):
        acm.list_certificates(SortBy="CREATED_AT")
    with acm_raises(acm, "InvalidArgsException"):
        acm.list_certificates(NextToken="not-a-token")
    with acm_raises(acm, "ValidationException"):
        acm.list_certificates(CertificateStatuses=["SHINY"])


def test_a_certificate_in_use_cannot_be_deleted(acm, lattice):
    domain = f"{uname('shop')}.example.com"
    arn = import_certificate(acm, [domain])
    with pytest.raises(ClientError) as e:
        lattice.create_service(name=uname("svc"), customDomainName=domain, certificateArn=ABSENT)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    svc = lattice.create_service(name=uname("svc"), customDomainName=domain, certificateArn=arn)
    try:
        d = acm.describe_certificate(CertificateArn=arn)["Certificate"]
        assert d["InUseBy"] == [svc["arn"]]
        assert next(s for s in listed(acm, Includes=EC) if s["CertificateArn"] == arn)["InUse"] is True
        with acm_raises(acm, "ResourceInUseException") as caught:
            acm.delete_certificate(CertificateArn=arn)
        assert "in use" in caught.message
        # Another certificate takes its place: the first is free.
        other = import_certificate(acm, [domain])
        lattice.update_service(serviceIdentifier=svc["id"], certificateArn=other)
        assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["InUseBy"] == []
        acm.delete_certificate(CertificateArn=arn)
        with acm_raises(acm, "ResourceInUseException"):
            acm.delete_certificate(CertificateArn=other)
    finally:
        lattice.delete_service(serviceIdentifier=svc["id"])
    assert acm.describe_certificate(CertificateArn=other)["Certificate"]["InUseBy"] == []
    acm.delete_certificate(CertificateArn=other)


def test_cli(endpoint):
    aws = find_aws()
    assert aws, "the aws CLI v1 is required"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret",
               AWS_DEFAULT_REGION=REGION, PATH=f"{Path(aws).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("AWS_PROFILE", None)

    def cli(*args):
        proc = subprocess.run([aws, "--endpoint-url", endpoint, "--output", "json", "acm", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    name = f"{uname('cli')}.example.com"
    c = make_certificate([name], key="rsa")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "cert.pem").write_bytes(c["cert"])
        (Path(d) / "key.pem").write_bytes(c["key"])
        arn = cli("import-certificate", "--certificate", f"fileb://{d}/cert.pem",
                  "--private-key", f"fileb://{d}/key.pem", "--tags", "Key=via,Value=cli")["CertificateArn"]
    assert ARN_RE.match(arn), arn
    assert cli("describe-certificate", "--certificate-arn", arn)["Certificate"]["DomainName"] == name
    found = cli("list-certificates", "--certificate-statuses", "ISSUED")["CertificateSummaryList"]
    assert arn in [s["CertificateArn"] for s in found]
    assert cli("list-tags-for-certificate", "--certificate-arn", arn)["Tags"] == [{"Key": "via", "Value": "cli"}]
    requested = cli("request-certificate", "--domain-name", name, "--key-algorithm", "EC_prime256v1")
    assert cli("get-certificate", "--certificate-arn", requested["CertificateArn"])["CertificateChain"]
    cli("delete-certificate", "--certificate-arn", arn)
    cli("delete-certificate", "--certificate-arn", requested["CertificateArn"])
