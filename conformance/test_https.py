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
    for versions in (["--http1.1"], ["--http1.1", "--tlsv1.2", "--tls-max", "1.2"]):
        out = curl(m, str(ca), *versions, "-w", "\n%{http_version}")
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


# --------------------------------------------------------------------------------------------
# HTTP/2 and gRPC
# --------------------------------------------------------------------------------------------


def test_http2_clients_through_an_https_listener(dp, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(trellis_ca(dp.endpoint))
    m = https_mesh(dp)
    wait_for(lambda: curl(m, str(ca)).returncode == 0, 10, interval=0.1, message="HTTPS to serve")
    out = curl(m, str(ca), "--http2", "-w", "\n%{http_version}")
    assert out.returncode == 0, out.stderr
    body, http_version = out.stdout.rsplit("\n", 1)
    assert http_version == "2"
    doc = json.loads(body)
    headers = {k.lower(): v for k, v in doc["headers"]}
    assert doc["target"] == "app" and headers["x-forwarded-proto"] == "https"
    text = s_client(m, str(ca), "-alpn", "h2,http/1.1")
    assert "ALPN protocol: h2" in text, text


def grpc_server():
    """A gRPC server on 127.0.0.1 (cleartext HTTP/2) with raw-bytes methods of `demo.Echo`:
    Unary echoes, ServerStream answers n messages, ClientStream joins what it got, Slow sleeps."""
    import grpc
    from concurrent import futures

    def unary(request, context):
        return b"echo:" + request + b" authority=" + dict(context.invocation_metadata()).get(
            "x-forwarded-proto", "").encode()

    def server_stream(request, context):
        for i in range(int(request or b"3")):
            yield f"message {i}".encode()

    def client_stream(requests, context):
        return b"+".join(requests)

    def slow(request, context):
        time.sleep(3)
        return b"late"

    ident = lambda b: b  # noqa: E731 (raw bytes in and out)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_grpc_through_an_https_listener_to_a_grpc_target_group(dp, tmp_path):
    import grpc
    server, port = grpc_server()
    try:
        pem = trellis_ca(dp.endpoint)
        vpc = dp.res.vpc()
        tg = dp.res.tg(vpc=vpc, config={"port": port, "protocol": "HTTP", "protocolVersion": "GRPC",
                                        "vpcIdentifier": vpc})["id"]
        dp.register(tg, ("127.0.0.1", port))
        sn = dp.res.sn()
        svc = dp.res.service()
        dp.res.listener(svc["id"], protocol="HTTPS", port=443, defaultAction=forward(tg))
        dp.res.snsa(sn["id"], svc["id"])
        dp.res.snva(sn["id"], vpc)
        host = dp.lattice.get_service(serviceIdentifier=svc["id"])["dnsEntry"]["domainName"]
        info = dp.ingress(vpc)
        credentials = grpc.ssl_channel_credentials(root_certificates=pem.encode())
        channel = grpc.secure_channel(f"{info['address']}:{dp.real_port(info, 443)}", credentials,
                                      options=[("grpc.ssl_target_name_override", host),
                                               ("grpc.default_authority", host)])
        ident = lambda b: b  # noqa: E731
        unary = channel.unary_unary("/demo.Echo/Unary", request_serializer=ident, response_deserializer=ident)
        wait_for(lambda: _ok(lambda: unary(b"ping", timeout=2)), 10, interval=0.2, message="gRPC to serve")
        assert unary(b"hello", timeout=5) == b"echo:hello authority=https"
        stream = channel.unary_stream("/demo.Echo/ServerStream", request_serializer=ident,
                                      response_deserializer=ident)
        assert list(stream(b"4", timeout=5)) == [b"message 0", b"message 1", b"message 2", b"message 3"]
        upload = channel.stream_unary("/demo.Echo/ClientStream", request_serializer=ident,
                                      response_deserializer=ident)
        assert upload(iter([b"a", b"b", b"c"]), timeout=5) == b"a+b+c"
        slow = channel.unary_unary("/demo.Echo/Slow", request_serializer=ident, response_deserializer=ident)
        with pytest.raises(grpc.RpcError) as caught:
            slow(b"", timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        missing = channel.unary_unary("/demo.Echo/Nope", request_serializer=ident, response_deserializer=ident)
        with pytest.raises(grpc.RpcError) as caught:
            missing(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the target's own status
        channel.close()
    finally:
        server.stop(0)


def _ok(call) -> bool:
    try:
        call()
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# TLS passthrough
# --------------------------------------------------------------------------------------------


def self_signed(tmp_path, name: str):
    """A key and self-signed certificate for `name` (openssl), as file paths."""
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True, timeout=30)
    return key, cert


class TlsEchoServer:
    """A TLS server on 127.0.0.1 with its own certificate: answers each line with `echo: <line>`."""

    def __init__(self, key, cert):
        import socket
        import ssl
        import threading
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                data = tls.recv(4096)
                tls.sendall(b"echo: " + data)
        except OSError:
            pass

    def stop(self):
        self.stopped = True
        self.sock.close()


def test_tls_passthrough_reaches_the_targets_own_tls(dp, tmp_path):
    import socket
    import ssl
    name = "pass.example.com"
    key, cert = self_signed(tmp_path, name)
    server = TlsEchoServer(key, cert)
    try:
        vpc = dp.res.vpc()
        tg = dp.res.tg(vpc=vpc, config={"port": server.port, "protocol": "TCP", "vpcIdentifier": vpc})["id"]
        dp.register(tg, ("127.0.0.1", server.port))
        sn = dp.res.sn()
        svc = dp.res.service(customDomainName=name)
        dp.res.listener(svc["id"], protocol="TLS_PASSTHROUGH", port=8443, defaultAction=forward(tg))
        dp.res.snsa(sn["id"], svc["id"])
        dp.res.snva(sn["id"], vpc)
        info = dp.ingress(vpc)
        context = ssl.create_default_context(cafile=str(cert))  # trusts the target, not Trellis

        def exchange():
            with socket.create_connection((info["address"], 8443), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    tls.sendall(b"hello through")
                    return tls.recv(4096), tls.getpeercert()
        answer, peer = wait_for(lambda: _ok_value(exchange), 10, interval=0.1, message="passthrough to serve")
        assert answer == b"echo: hello through"
        assert dict(x[0] for x in peer["subject"])["commonName"] == name
        # A name that is not the service's custom domain gets no handshake.
        with socket.create_connection((info["address"], 8443), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                context.wrap_socket(raw, server_hostname="other.example.com")
    finally:
        server.stop()


def _ok_value(call):
    try:
        return call()
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Custom domain names with customer certificates (ACM)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_a_custom_domain_is_served_with_its_imported_certificate(dp, tmp_path, key):
    from support import make_ca, make_certificate
    acm = dp.server.client("acm")
    name = f"shop-{key}.example.com"
    ca = make_ca("Shop CA")
    cert = make_certificate([name], key=key, ca=ca)
    arn = acm.import_certificate(Certificate=cert["cert"], PrivateKey=cert["key"],
                                 CertificateChain=cert["chain"])["CertificateArn"]
    vpc = dp.res.vpc()
    target = dp.target("shop")
    tg = dp.tg(vpc)["id"]
    dp.register(tg, target)
    sn = dp.res.sn()
    svc = dp.res.service(customDomainName=name, certificateArn=arn)
    dp.res.listener(svc["id"], protocol="HTTPS", port=443, defaultAction=forward(tg))
    dp.res.snsa(sn["id"], svc["id"])
    dp.res.snva(sn["id"], vpc)
    generated = dp.lattice.get_service(serviceIdentifier=svc["id"])["dnsEntry"]["domainName"]
    info = dp.ingress(vpc)
    port = dp.real_port(info, 443)
    (tmp_path / "shop-ca.pem").write_bytes(ca["cert"])
    (tmp_path / "trellis-ca.pem").write_text(trellis_ca(dp.endpoint))

    def fetch(host, ca_file):
        return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file),
                               "--resolve", f"{host}:{port}:{info['address']}", f"https://{host}:{port}/"],
                              capture_output=True, text=True, timeout=30)
    # The custom name: the imported certificate, which the shop's CA verifies.
    out = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(fetch(name, tmp_path / "shop-ca.pem")), 10,
                   interval=0.1, message="the custom domain to serve")
    doc = json.loads(out.stdout)
    assert doc["target"] == "shop"
    assert {k.lower(): v for k, v in doc["headers"]}["host"] == name
    # The generated name on the same listener: the managed certificate, which the Trellis CA
    # verifies (and the shop's does not).
    assert fetch(generated, tmp_path / "trellis-ca.pem").returncode == 0
    assert fetch(generated, tmp_path / "shop-ca.pem").returncode != 0
    # A certificate in use cannot go.
    with pytest.raises(acm.exceptions.ResourceInUseException):
        acm.delete_certificate(CertificateArn=arn)


def test_a_requested_certificate_serves_a_custom_domain(dp, tmp_path):
    acm = dp.server.client("acm")
    name = "api.example.org"
    arn = acm.request_certificate(DomainName=name, KeyAlgorithm="EC_prime256v1")["CertificateArn"]
    vpc = dp.res.vpc()
    target = dp.target("api")
    tg = dp.tg(vpc)["id"]
    dp.register(tg, target)
    sn = dp.res.sn()
    svc = dp.res.service(customDomainName=name)
    # Set later, through UpdateService.
    dp.lattice.update_service(serviceIdentifier=svc["id"], certificateArn=arn)
    dp.res.listener(svc["id"], protocol="HTTPS", port=443, defaultAction=forward(tg))
    dp.res.snsa(sn["id"], svc["id"])
    dp.res.snva(sn["id"], vpc)
    info = dp.ingress(vpc)
    port = dp.real_port(info, 443)
    ca = tmp_path / "trellis-ca.pem"
    ca.write_text(trellis_ca(dp.endpoint))

    def fetch():
        return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca), "--resolve",
                               f"{name}:{port}:{info['address']}", f"https://{name}:{port}/"],
                              capture_output=True, text=True, timeout=30)
    out = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(fetch()), 10, interval=0.1,
                   message="the custom domain to serve")
    assert json.loads(out.stdout)["target"] == "api"
    # Its certificate is the one ACM issued (same serial).
    described = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    text = subprocess.run(["openssl", "s_client", "-connect", f"{info['address']}:{port}", "-servername", name],
                          input="", capture_output=True, text=True, timeout=30).stdout
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S).group(0)
    serial = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True, text=True,
                            timeout=30).stdout.strip().split("=")[1]
    assert serial.lower() == described["Serial"].replace(":", "").lower()
