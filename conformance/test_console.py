"""The web console at /_trellis/console (DESIGN.md's "Security baseline"): it signs in with the
API token into an HTTP-only, same-site session cookie; a cross-site or DNS-rebinding request
cannot sign anyone in or out; the page is served under a strict Content-Security-Policy and is
never cached or framed. In headless Chromium after `trellis demo --keep` it shows the demo's
service network, both VPCs, the service and its two healthy targets, and its forms create,
associate and delete through the same API boto3 uses. The test saves a screenshot (printed)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import support
from support import make_client, raw_request, wait_for

CONSOLE = "/_trellis/console"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEMO_READY_SECONDS = 120
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Without a browser: signing in, and the guards
# --------------------------------------------------------------------------------------------


def own(endpoint: str) -> dict:
    """The headers of a same-origin form post (as a browser sends them)."""
    return dict(FORM, Origin=endpoint)


def sign_in(endpoint: str, token: str, headers: dict | None = None):
    body = urllib.parse.urlencode({"token": token})
    return raw_request(endpoint, "POST", f"{CONSOLE}/session", body, headers=headers or own(endpoint), sign=False)


def session_cookie(resp) -> str:
    """`trellis_session=…` from a sign-in's Set-Cookie."""
    set_cookie = resp.headers.get("set-cookie", "")
    assert set_cookie.startswith("trellis_session="), resp
    return set_cookie.split(";")[0]


def get(endpoint: str, path: str, cookie: str | None = None, **kwargs):
    headers = {"Cookie": cookie} if cookie else {}
    return raw_request(endpoint, "GET", path, headers=headers, sign=False, **kwargs)


def assert_secured(resp):
    csp = resp.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, resp
    assert "frame-ancestors 'none'" in csp, resp
    assert resp.headers.get("x-frame-options") == "DENY", resp
    assert resp.headers.get("x-content-type-options") == "nosniff", resp
    assert resp.headers.get("cache-control") == "no-store", resp


def test_console_requires_sign_in(server_factory):
    srv = server_factory()
    ep = srv.endpoint
    token = (srv.data_dir / "api-token").read_text().strip()

    page = get(ep, CONSOLE)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html"), page
    assert b'id="signin"' in page.body and b"app.js" not in page.body, page
    assert_secured(page)
    for path in (f"{CONSOLE}/info", f"{CONSOLE}/app.js"):
        refused = get(ep, path)
        assert refused.status == 401, (path, refused)
        assert_secured(refused)
    css = get(ep, f"{CONSOLE}/console.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css") and css.body, css

    wrong = sign_in(ep, "not-the-token")
    assert wrong.status == 401 and "set-cookie" not in wrong.headers, wrong
    assert b'id="signin"' in wrong.body and b'class="error"' in wrong.body, wrong
    assert_secured(wrong)

    # What a web page could forge is refused before the token is even looked at.
    forged = {
        "foreign Origin": dict(FORM, Origin="http://evil.example"),
        "null Origin": dict(FORM, Origin="null"),
        "cross-site fetch": dict(FORM, **{"Sec-Fetch-Site": "cross-site"}),
    }
    for why, headers in forged.items():
        resp = sign_in(ep, token, headers)
        assert resp.status == 403 and "set-cookie" not in resp.headers, (why, resp)
    rebound = raw_request(ep, "POST", f"{CONSOLE}/session", f"token={token}", headers=FORM, sign=False,
                          host=f"rebound.example:{srv.port}")
    assert rebound.status == 403 and "set-cookie" not in rebound.headers, rebound

    signed_in = sign_in(ep, token)
    assert signed_in.status == 303 and signed_in.headers["location"] == CONSOLE, signed_in
    attrs = [a.strip() for a in signed_in.headers["set-cookie"].split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs), attrs
    cookie = session_cookie(signed_in)

    app = get(ep, CONSOLE, cookie)
    assert app.status == 200 and b"/_trellis/console/app.js" in app.body and b'id="signin"' not in app.body, app
    assert_secured(app)
    # No inline script: the page's only script is the file.
    assert re.findall(rb"<script[^>]*>", app.body) == [b'<script src="/_trellis/console/app.js" defer>'], app
    script = get(ep, f"{CONSOLE}/app.js", cookie)
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript"), script
    info = get(ep, f"{CONSOLE}/info", cookie)
    assert info.status == 200 and info.json()["account"] == support.ACCOUNT, info

    # Signing out is a same-origin post too; then the cookie opens nothing.
    cross = raw_request(ep, "POST", f"{CONSOLE}/signout", "", sign=False,
                        headers=dict(FORM, Origin="http://evil.example", Cookie=cookie))
    assert cross.status == 403 and get(ep, f"{CONSOLE}/info", cookie).status == 200, cross
    out = raw_request(ep, "POST", f"{CONSOLE}/signout", "", sign=False, headers=dict(own(ep), Cookie=cookie))
    assert out.status == 303 and "Max-Age=0" in out.headers.get("set-cookie", ""), out
    assert get(ep, f"{CONSOLE}/info", cookie).status == 401
    assert b'id="signin"' in get(ep, CONSOLE, cookie).body


def test_console_session_stands_in_for_a_signature(server_factory):
    """With --require-signature the page's unsigned API calls go through on the session cookie
    (and only on it)."""
    srv = server_factory(env={"TRELLIS_REQUIRE_SIGNATURE": "1"})
    ep = srv.endpoint
    token = (srv.data_dir / "api-token").read_text().strip()
    assert b'id="signin"' in get(ep, CONSOLE).body
    assert get(ep, "/servicenetworks").status == 403
    assert get(ep, "/_trellis/ca").status == 401

    cookie = session_cookie(sign_in(ep, token))
    listed = get(ep, "/servicenetworks", cookie)
    assert listed.status == 200 and listed.json()["items"] == [], listed
    vpcs = raw_request(ep, "POST", "/", "Action=DescribeVpcs&Version=2016-11-15", sign=False,
                       headers=dict(own(ep), Cookie=cookie))
    assert vpcs.status == 200 and b"<vpcSet" in vpcs.body, vpcs
    assert get(ep, "/_trellis/ca", cookie).status == 200
    assert get(ep, "/servicenetworks", "trellis_session=forged").status == 403
    # The root key and the token outlive any session: a session cookie does not read them.
    assert get(ep, "/_trellis/credentials", cookie).status == 401
    assert raw_request(ep, "GET", "/_trellis/credentials", sign=False,
                       headers={"Authorization": f"Bearer {token}"}).status == 200


# --------------------------------------------------------------------------------------------
# In Chromium, after `trellis demo --keep`
# --------------------------------------------------------------------------------------------


@dataclass
class Demo:
    endpoint: str
    token: str
    ids: dict


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`trellis demo --keep --network loopback`, its temporary directory under pytest's; stopped
    with Ctrl-C (SIGINT, so it cleans up) by PID, killed if it does not stop."""
    tmp = tmp_path_factory.mktemp("console-demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env["TMPDIR"] = str(tmp)
    log_path = tmp / "demo.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([support.require_binary(), "demo", "--keep", "--network", "loopback"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + DEMO_READY_SECONDS
        while True:
            text = log_path.read_text(errors="replace")
            ready = re.search(r"Left running at (http://\S+) \(data in (\S+)\)", text)
            if ready:
                break
            assert proc.poll() is None, f"trellis demo exited with {proc.returncode}:\n{text}"
            assert time.monotonic() < deadline, f"trellis demo not ready within {DEMO_READY_SECONDS}s:\n{text}"
            time.sleep(0.2)
        endpoint, data = ready.group(1), Path(ready.group(2)) / "data"
        ids = {name: re.search(rf"created {name} (vpc-[0-9a-f]+)", text).group(1)
               for name in ("VPC-A", "VPC-B", "VPC-C")}
        ids["sn"] = re.search(r"created service network (sn-[0-9a-f]+)", text).group(1)
        svc = re.search(r"created Lattice service (svc-[0-9a-f]+) \(\S+\), HTTP :80 → target group (tg-[0-9a-f]+)",
                        text)
        ids["svc"], ids["tg"] = svc.group(1), svc.group(2)
        yield Demo(endpoint, (data / "api-token").read_text().strip(), ids)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(tmp / f"trellis-demo-{proc.pid}", ignore_errors=True)


@pytest.fixture
def browser(tmp_path_factory):
    """Headless Chromium through Debian's chromedriver (never a downloaded one).

    Chromium's profile and its singleton socket directories go under a directory of the test's
    own, removed afterwards; left to themselves they pile up in /tmp, one per start.
    """
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not driver_path or not chromium:
        pytest.fail("the console test needs Debian's chromium and chromium-driver (scripts/test installs them)")
    from selenium.common.exceptions import SessionNotCreatedException

    scratch = tmp_path_factory.mktemp("chromium")
    env = dict(os.environ, TMPDIR=str(scratch))
    # Chromium now and then exits as it starts on a busy machine ("Chrome instance exited"):
    # that is the browser, not the console, so a start is tried three times, each with a
    # profile of its own (a crashed one may leave its lock behind).
    for attempt in range(3):
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,1300", "--no-proxy-server", f"--user-data-dir={scratch / f'profile-{attempt}'}"):
            options.add_argument(arg)
        try:
            driver = webdriver.Chrome(service=Service(executable_path=driver_path, env=env), options=options)
            break
        except SessionNotCreatedException:
            if attempt == 2:
                raise
            time.sleep(1)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(scratch, ignore_errors=True)


def sign_in_browser(browser, demo: Demo, wait):
    """Signs in through the form and waits for the page's first drawing."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    if not browser.current_url.startswith(demo.endpoint + CONSOLE):
        browser.get(demo.endpoint + CONSOLE)
    wait.until(ec.presence_of_element_located((By.ID, "token"))).send_keys(demo.token)
    browser.find_element(By.ID, "signin-submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-loaded='true']")))


def test_console_in_chromium(demo, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException

    ids = demo.ids
    # The page redraws every few seconds: an element found just before may be gone by the time
    # it is used, so every look and click is retried until it holds.
    wait = WebDriverWait(browser, 20, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))

    def one(selector: str):
        return wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, selector)))

    def gone(selector: str):
        wait.until_not(ec.presence_of_element_located((By.CSS_SELECTOR, selector)))

    def attr(selector: str, name: str) -> str:
        return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, selector).get_attribute(name))

    def text(selector: str) -> str:
        return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, selector).text)

    def click(selector: str):
        def attempt(d):
            d.find_element(By.CSS_SELECTOR, selector).click()
            return True
        wait.until(attempt)

    def done(what: str):
        """Waits for the page to say how `what` went, and checks that it went through."""
        said = wait.until(lambda d: (d.execute_script(
            "const m = document.querySelector('#flash .msg'); return m ? m.textContent : ''") or "")
            .startswith(f"{what}: ") and d.find_element(By.CSS_SELECTOR, "#flash .msg").text)
        assert said == f"{what}: done", said

    def choose(selector: str, value: str):
        """Picks `value` in a select once the page has listed it there."""
        def attempt(d):
            select = Select(d.find_element(By.CSS_SELECTOR, selector))
            if value not in [o.get_attribute("value") for o in select.options]:
                return False
            select.select_by_value(value)
            return True
        wait.until(attempt)

    def click_twice(selector: str):
        """Deleting takes two clicks (the first arms the button)."""
        click(selector)
        wait.until(lambda d: "armed" in d.find_element(By.CSS_SELECTOR, selector).get_attribute("class"))
        click(selector)

    # Signing in: a wrong token gets the form back, the right one the console.
    browser.get(demo.endpoint + CONSOLE)
    one("#token").send_keys("wrong")
    click("#signin-submit")
    assert "not this installation's API token" in text("p.error")
    sign_in_browser(browser, demo, wait)

    # The demo's network: its service network with VPC-A and VPC-B (not VPC-C), the service,
    # and the two healthy targets of the ECS service's tasks.
    sn = f"section.sn[data-sn-id='{ids['sn']}']"
    assert attr(sn, "data-sn-name") == "demo-network"
    for name in ("VPC-A", "VPC-B"):
        vpc = f"{sn} li.vpc[data-vpc-id='{ids[name]}']"
        assert attr(vpc, "data-vpc-name") == name and name in text(vpc)
    assert not browser.find_elements(By.CSS_SELECTOR, f"{sn} li.vpc[data-vpc-id='{ids['VPC-C']}']")
    service = f"{sn} .service[data-service-id='{ids['svc']}']"
    assert "demo-web" in text(service)
    healthy = f"{service} .tg[data-tg-id='{ids['tg']}'] .target[data-target-status='HEALTHY']"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, healthy)) == 2)
    assert wait.until(lambda d: [("status-healthy" in t.get_attribute("class"), t.text.endswith(" healthy"))
                                 for t in d.find_elements(By.CSS_SELECTOR, healthy)]) == [(True, True)] * 2
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR,
                                             "[data-ecs-service='web'] .task[data-task-status='RUNNING']")) == 2)

    # The create forms round-trip: what each makes appears on the page and boto3 sees it; then
    # the page's delete buttons take it all away again, the associations first.
    lattice = make_client("vpc-lattice", demo.endpoint)
    suffix = uuid.uuid4().hex[:8]
    name = f"console-{suffix}"
    one("#create-sn-name").send_keys(name)
    click("#create-sn-submit")
    done(f"create service network {name}")
    new_id = attr(f"section.sn[data-sn-name='{name}']", "data-sn-id")
    listed = {s["name"]: s["id"] for s in support.list_all(lattice, "list_service_networks")}
    assert listed.get(name) == new_id, listed
    new_sn = f"section.sn[data-sn-id='{new_id}']"

    choose("#assoc-vpc-sn", new_id)
    choose("#assoc-vpc-vpc", ids["VPC-C"])
    click("#assoc-vpc-submit")
    done("associate the VPC")
    assert attr(f"{new_sn} li.vpc[data-vpc-id='{ids['VPC-C']}']", "data-vpc-name") == "VPC-C"
    vpc_assocs = lattice.list_service_network_vpc_associations(serviceNetworkIdentifier=new_id)["items"]
    assert [a["vpcId"] for a in vpc_assocs] == [ids["VPC-C"]], vpc_assocs

    tg_name = f"console-tg-{suffix}"
    one("#create-tg-name").send_keys(tg_name)
    choose("#create-tg-vpc", ids["VPC-C"])
    port = one("#create-tg input[name='port']")
    port.clear()
    port.send_keys("8080")
    click("#create-tg-submit")
    done(f"create target group {tg_name}")
    tg_id = attr(f".tg[data-tg-name='{tg_name}']", "data-tg-id")
    tg = lattice.get_target_group(targetGroupIdentifier=tg_id)
    assert (tg["name"], tg["type"], tg["config"]["port"], tg["config"]["vpcIdentifier"]) == \
        (tg_name, "IP", 8080, ids["VPC-C"]), tg

    svc_name = f"console-svc-{suffix}"
    one("#create-svc-name").send_keys(svc_name)
    choose("#create-svc-tg", tg_id)
    click("#create-svc-submit")
    done(f"create service {svc_name}")
    svc_id = attr(f".service[data-service-name='{svc_name}']", "data-service-id")
    one(f".service[data-service-id='{svc_id}'] .listener .tg[data-tg-id='{tg_id}']")
    listeners = lattice.list_listeners(serviceIdentifier=svc_id)["items"]
    assert [(x["protocol"], x["port"]) for x in listeners] == [("HTTP", 80)], listeners
    action = lattice.get_listener(serviceIdentifier=svc_id, listenerIdentifier=listeners[0]["id"])["defaultAction"]
    assert [g["targetGroupIdentifier"] for g in action["forward"]["targetGroups"]] == [tg_id], action

    # Rules and weights as the API holds them: a rule made with boto3 shows its match and its
    # two weighted target groups.
    tg2_id = lattice.create_target_group(name=f"console-tg2-{suffix}", type="IP", config={
        "port": 8081, "protocol": "HTTP", "vpcIdentifier": ids["VPC-C"]})["id"]
    rule = lattice.create_rule(
        serviceIdentifier=svc_id, listenerIdentifier=listeners[0]["id"], name="api", priority=10,
        match={"httpMatch": {"pathMatch": {"match": {"prefix": "/api"}}}},
        action={"forward": {"targetGroups": [{"targetGroupIdentifier": tg_id, "weight": 80},
                                             {"targetGroupIdentifier": tg2_id, "weight": 20}]}})
    drawn = f".service[data-service-id='{svc_id}'] .rule[data-rule-id='{rule['id']}']"
    assert "rule 10" in text(drawn) and "path /api*" in text(drawn)
    assert "weight 80" in text(f"{drawn} .tg[data-tg-id='{tg_id}']")
    assert "weight 20" in text(f"{drawn} .tg[data-tg-id='{tg2_id}']")

    choose("#assoc-svc-sn", new_id)
    choose("#assoc-svc-svc", svc_id)
    click("#assoc-svc-submit")
    done("associate the service")
    one(f"{new_sn} .service[data-service-id='{svc_id}'] .tg[data-tg-id='{tg_id}']")
    svc_assocs = lattice.list_service_network_service_associations(serviceNetworkIdentifier=new_id)["items"]
    assert [a["serviceId"] for a in svc_assocs] == [svc_id], svc_assocs

    shot = tmp_path / "console.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert len(data) > 10_000 and data.startswith(PNG_SIGNATURE), len(data)
    print(f"\nconsole screenshot: {shot}")

    # A service network with associations cannot go: the API's refusal is shown.
    click_twice(f"{new_sn} header button[data-delete='{new_id}']")
    assert "ConflictException" in text("#flash .msg.error")
    click_twice(f"{new_sn} .service[data-service-id='{svc_id}'] button[data-delete='{svc_assocs[0]['id']}']")
    gone(f"{new_sn} .service[data-service-id='{svc_id}']")
    click_twice(f".service[data-service-id='{svc_id}'] button[data-delete='{svc_id}']")
    gone(f".service[data-service-id='{svc_id}']")
    click_twice(f".tg[data-tg-id='{tg_id}'] button[data-delete='{tg_id}']")
    gone(f".tg[data-tg-id='{tg_id}']")
    lattice.delete_target_group(targetGroupIdentifier=tg2_id)
    click_twice(f"{new_sn} li.vpc[data-vpc-id='{ids['VPC-C']}'] button[data-delete='{vpc_assocs[0]['id']}']")
    gone(f"{new_sn} li.vpc[data-vpc-id='{ids['VPC-C']}']")
    click_twice(f"{new_sn} header button[data-delete='{new_id}']")
    gone(new_sn)
    wait_for(lambda: name not in {s["name"] for s in support.list_all(lattice, "list_service_networks")}, 10,
             message="the service network is gone")
    wait_for(lambda: svc_name not in {s["name"] for s in support.list_all(lattice, "list_services")}, 10,
             message="the service is gone")
    wait_for(lambda: tg_name not in {t["name"] for t in support.list_all(lattice, "list_target_groups")}, 10,
             message="the target group is gone")
    assert one(sn) and one(service)  # the demo's are untouched

    # A session ended elsewhere (another tab signed out) takes the page back to the sign-in form
    # at its next refresh; signing out with the button ends the session: the console's data
    # answers 401 to its cookie.
    cookie = browser.get_cookie("trellis_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    elsewhere = raw_request(demo.endpoint, "POST", f"{CONSOLE}/signout", "", sign=False,
                            headers=dict(own(demo.endpoint), Cookie=f"trellis_session={cookie['value']}"))
    assert elsewhere.status == 303, elsewhere
    one("#signin")
    sign_in_browser(browser, demo, wait)
    cookie = browser.get_cookie("trellis_session")
    assert get(demo.endpoint, f"{CONSOLE}/info", f"trellis_session={cookie['value']}").status == 200
    click("#signout button")
    one("#signin")
    assert get(demo.endpoint, f"{CONSOLE}/info", f"trellis_session={cookie['value']}").status == 401


def test_console_in_chromium_under_require_signature(server_factory, browser):
    """With --require-signature the page's own calls (Lattice, EC2, ECS, unsigned) go through on
    its session: it draws, and its form creates."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    srv = server_factory(env={"TRELLIS_REQUIRE_SIGNATURE": "1"})
    token = (srv.data_dir / "api-token").read_text().strip()
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    sign_in_browser(browser, Demo(srv.endpoint, token, {}), wait)
    assert "cannot refresh" not in browser.find_element(By.ID, "refreshed").text
    assert "No ECS clusters" in browser.find_element(By.ID, "ecs").text
    name = f"strict-{uuid.uuid4().hex[:8]}"
    browser.find_element(By.ID, "create-sn-name").send_keys(name)
    browser.find_element(By.ID, "create-sn-submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"section.sn[data-sn-name='{name}']")))
    cookie = browser.get_cookie("trellis_session")["value"]
    listed = get(srv.endpoint, "/servicenetworks", f"trellis_session={cookie}").json()["items"]
    assert [sn["name"] for sn in listed] == [name], listed


# What /_trellis/metrics and /_trellis/access-logs answer (Prometheus text; NDJSON, oldest
# first), served to the page in place of the node's own: the test then knows the numbers. The
# script runs before the page's own (through the DevTools protocol, which CSP does not govern).
FAKE_TELEMETRY = """
(() => {
  const real = window.fetch.bind(window);
  let polls = 0;
  const ids = %(ids)s;
  window.fetch = (input, init) => {
    const url = String(input);
    if (url.startsWith('/_trellis/metrics')) {
      polls += 1;
      const labels = `service_network="${ids.sn}",service="${ids.svc}",target_group="${ids.tg}"`;
      const text = '# HELP trellis_requests_total Requests answered, by status class.\\n' +
        '# TYPE trellis_requests_total counter\\n' +
        `trellis_requests_total{${labels},code="2xx"} ${polls * 90}\\n` +
        `trellis_requests_total{${labels},code="5xx"} ${polls * 30}\\n` +
        'trellis_requests_total{service_network="sn-0",service="svc-0000",target_group="tg-0",code="2xx"} 7\\n';
      return Promise.resolve(new Response(text, { status: 200, headers: { 'Content-Type': 'text/plain' } }));
    }
    if (url.startsWith('/_trellis/access-logs')) {
      const entry = (n, code) => JSON.stringify({
        startTime: `2026-12-04T23:5${n}:00.000Z`, requestMethod: 'GET', requestPath: `/console-probe-${n}`,
        responseCode: code, duration: n, requestId: `r${n}`,
        serviceArn: `arn:aws:vpc-lattice:us-east-1:000000000000:service/${ids.svc}`, sourceVpcId: ids.vpcB,
      });
      const text = [entry(1, 200), entry(2, 503)].join('\\n') + '\\n';
      return Promise.resolve(new Response(text, { status: 200, headers: { 'Content-Type': 'application/x-ndjson' } }));
    }
    return real(input, init);
  };
})();
"""


# The access log table's cells, row by row (read at once: the page redraws it every few seconds).
ACCESS_LOG_CELLS = ("return [...document.querySelectorAll('#access-log tr')].slice(1)"
                    ".map((r) => [...r.cells].map((c) => c.textContent));")


def test_console_rates_and_access_log(demo, browser):
    """Per-service rates are the difference between two polls of the counters, summed over the
    other labels; the access log's tail is shown newest first, with names for IDs."""
    import json

    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ids = demo.ids
    script = FAKE_TELEMETRY % {"ids": json.dumps({"sn": ids["sn"], "svc": ids["svc"], "tg": ids["tg"],
                                                  "vpcB": ids["VPC-B"]})}
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    wait = WebDriverWait(browser, 20, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    sign_in_browser(browser, demo, wait)

    # 120 more requests a poll (2xx and 5xx together) every 3 s: about 40 req/s.
    def rate(d):
        text = d.find_element(By.CSS_SELECTOR, f".service [data-rate-service='{ids['svc']}']").text
        m = re.fullmatch(r"([0-9.]+) req/s", text)
        return m and float(m.group(1)) > 0 and float(m.group(1))

    shown = wait.until(rate)
    assert 20 < shown < 80, shown
    row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#rates tr[data-rate-row='{ids['svc']}']").text)
    assert "demo-web" in row and "req/s" in row, row

    cells = browser.execute_script(ACCESS_LOG_CELLS)
    assert [c[2] for c in cells] == ["/console-probe-2", "/console-probe-1"], cells
    assert cells[0][3] == "503" and cells[0][5] == "demo-web" and cells[0][6].startswith("VPC-B"), cells


def test_console_real_traffic(demo, browser):
    """Requests from VPC-B through the proxy show in the service's rate and the access log's
    tail, from the node's own /_trellis/metrics and /_trellis/access-logs."""
    import http.client
    import threading

    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if get(demo.endpoint, "/_trellis/metrics").status != 200:
        pytest.skip("this build serves no /_trellis/metrics")
    ids = demo.ids
    lattice = make_client("vpc-lattice", demo.endpoint)
    dns = lattice.get_service(serviceIdentifier=ids["svc"])["dnsEntry"]["domainName"]
    ingress = get(demo.endpoint, f"/_trellis/vpcs/{ids['VPC-B']}/ingress").json()
    port = 80 + ingress["lowPortOffset"]
    subscription = lattice.create_access_log_subscription(
        resourceIdentifier=ids["svc"], destinationArn="arn:aws:logs:us-east-1:000000000000:log-group:console-test")
    stop = threading.Event()

    def traffic():
        n = 0
        while not stop.is_set():
            n += 1
            conn = http.client.HTTPConnection(ingress["address"], port, timeout=5)
            try:
                conn.request("GET", f"/console-traffic-{n}", headers={"Host": dns})
                conn.getresponse().read()
            except OSError:
                pass
            finally:
                conn.close()
            stop.wait(0.05)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        wait = WebDriverWait(browser, 25, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
        sign_in_browser(browser, demo, wait)

        def rate(d):
            text = d.find_element(By.CSS_SELECTOR, f".service [data-rate-service='{ids['svc']}']").text
            m = re.fullmatch(r"([0-9.]+) req/s", text)
            return m and float(m.group(1)) > 0

        wait.until(rate)
        rows = wait.until(lambda d: [r for r in d.execute_script(ACCESS_LOG_CELLS)
                                     if r[2].startswith("/console-traffic-")])
        assert rows[0][5] == "demo-web" and rows[0][6].startswith("VPC-B"), rows[0]
    finally:
        stop.set()
        sender.join(10)
        lattice.delete_access_log_subscription(accessLogSubscriptionIdentifier=subscription["id"])
