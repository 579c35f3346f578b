"""HTTPS listeners, black-box: the installation's certificate authority (`trellis ca`,
`/_trellis/ca`), managed certificates for generated names, and real TLS clients (curl and
`openssl s_client`) through the proxy of a real `trellis serve` in loopback mode.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest

from support import forward, require_binary, wait_for
from test_dataplane import CONFIG, DataPlane

CERTIFICATE_LIFETIME = 6


@pytest.fixture
def dp(server_factory):
    plane = DataPlane(server_factory(config_text=CONFIG))
    yield plane
    plane.close()


def trellis_ca(endpoint: str) -> str:
    out = subprocess.run([require_binary(), "ca", "--endpoint", endpoint], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def https_mesh(dp: DataPlane, port: int = 443) -> dict:
    vpc = dp.res.vpc()
    target = dp.target("app")
    tg = dp.tg(vpc)["id"]
    dp.register(tg, target)
    sn = dp.res.sn()
    svc = dp.res.service()
    listener = dp.res.listener(svc["id"], protocol="HTTPS", port=port, defaultAction=forward(tg))
    dp.res.snsa(sn["id"], svc["id"])
    dp.res.snva(sn["id"], vpc)
    host = dp.lattice.get_service(serviceIdentifier=svc["id"])["dnsEntry"]["domainName"]
    info = dp.ingress(vpc)
    return {"vpc": vpc, "svc": svc, "listener": listener, "host": host, "address": info["address"],
            "port": dp.real_port(info, port), "target": target}


def curl(m: dict, ca_file: str, *extra: str) -> subprocess.CompletedProcess:
    url = f"https://{m['host']}:{m['port']}/"
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", ca_file,
                           "--resolve", f"{m['host']}:{m['port']}:{m['address']}", *extra, url],
                          capture_output=True, text=True, timeout=30)


def s_client(m: dict, ca_file: str, *extra: str) -> str:
    out = subprocess.run(["openssl", "s_client", "-connect", f"{m['address']}:{m['port']}",
                          "-servername", m["host"], "-CAfile", ca_file, "-verify_return_error",
                          "-showcerts", *extra],
                         input="", capture_output=True, text=True, timeout=30)
    return out.stdout + out.stderr


def leaf_serial(m: dict, ca_file: str) -> str:
    text = s_client(m, ca_file)
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    assert pem, text
    out = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem.group(0), capture_output=True,
                         text=True, timeout=30)
    return out.stdout.strip()


def test_trellis_ca_prints_the_authority_and_the_endpoint_serves_it(dp, tmp_path):
    pem = trellis_ca(dp.endpoint)
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and pem.rstrip().endswith("-----END CERTIFICATE-----")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{dp.endpoint}/_trellis/ca") as r:
        assert r.read().decode() == pem
    ca = tmp_path / "ca.pem"
    ca.write_text(pem)
    text = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "basicConstraints"],
                          input=pem, capture_output=True, text=True, timeout=30).stdout
    assert "Trellis CA" in text and "CA:TRUE" in text, text


def test_https_listener_serves_with_the_managed_certificate(dp, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(trellis_ca(dp.endpoint))
    m = https_mesh(dp)
    wait_for(lambda: curl(m, str(ca)).returncode == 0, 10, interval=0.1, message="HTTPS to serve")
    for version in ("--http1.1", "--tlsv1.2"):
        out = curl(m, str(ca), version, "-w", "\n%{http_version}")
        assert out.returncode == 0, out.stderr
        body, http_version = out.stdout.rsplit("\n", 1)
        doc = json.loads(body)
        assert doc["target"] == "app"
        headers = {k.lower(): v for k, v in doc["headers"]}
        assert headers["x-forwarded-proto"] == "https"
        assert headers["host"] == m["host"]
        assert http_version == "1.1"
    # The certificate chain: our leaf for the generated zone, issued by the Trellis CA.
    text = s_client(m, str(ca), "-alpn", "http/1.1")
    assert "Verify return code: 0 (ok)" in text, text
    assert "ALPN protocol: http/1.1" in text, text
    assert re.search(r"s:CN\s*=\s*\*\.[0-9a-f]+\.vpc-lattice-svcs\.", text), text
    assert "i:O = Trellis, CN = Trellis CA" in text, text
    # Without the CA, the certificate is not trusted.
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve",
                          f"{m['host']}:{m['port']}:{m['address']}", f"https://{m['host']}:{m['port']}/"],
                         capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin",
                                                                          "SSL_CERT_FILE": "/dev/null"})
    assert out.returncode != 0


def test_bad_tls_input_closes_the_connection_and_others_go_on(dp, tmp_path):
    import socket
    ca = tmp_path / "ca.pem"
    ca.write_text(trellis_ca(dp.endpoint))
    m = https_mesh(dp)
    wait_for(lambda: curl(m, str(ca)).returncode == 0, 10, interval=0.1, message="HTTPS to serve")
    # Garbage that starts like a handshake; an unknown server name; cleartext on a TLS-only port.
    with socket.create_connection((m["address"], m["port"]), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05garbage, not a ClientHello")
        s.settimeout(5)
        assert b"HTTP/1.1" not in s.recv(4096)
    out = subprocess.run(["openssl", "s_client", "-connect", f"{m['address']}:{m['port']}", "-servername",
                          "nobody.example"], input="", capture_output=True, text=True, timeout=30)
    assert "BEGIN CERTIFICATE" not in out.stdout
    with socket.create_connection((m["address"], m["port"]), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {m['host']}\r\n\r\n".encode())
        s.settimeout(5)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b"connection: close" in answer
    assert curl(m, str(ca)).returncode == 0


def test_the_ca_survives_a_restart_and_certificates_renew(server_factory, tmp_path):
    server = server_factory(config_text=f"certificate_lifetime_seconds = {CERTIFICATE_LIFETIME}\n" + CONFIG)
    dp = DataPlane(server)
    try:
        pem = trellis_ca(dp.endpoint)
        ca = tmp_path / "ca.pem"
        ca.write_text(pem)
        m = https_mesh(dp)
        wait_for(lambda: curl(m, str(ca)).returncode == 0, 10, interval=0.1, message="HTTPS to serve")
        first = leaf_serial(m, str(ca))
        # Renewed once two thirds of its lifetime have passed.
        wait_for(lambda: leaf_serial(m, str(ca)) != first, 3 * CERTIFICATE_LIFETIME, interval=0.5,
                 message="the managed certificate to be renewed")
        assert curl(m, str(ca)).returncode == 0
        # A restart keeps the authority: the same CA, and what it issued still verifies.
        server.stop()
        server.start()
        dp.endpoint = server.endpoint
        assert trellis_ca(dp.endpoint) == pem
        m["address"] = dp.ingress(m["vpc"])["address"]
        wait_for(lambda: curl(m, str(ca)).returncode == 0, 10, interval=0.1, message="HTTPS after restart")
    finally:
        dp.close()
