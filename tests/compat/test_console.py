"""The web console in a real browser: headless Chromium from Debian (`chromium`,
`chromium-driver`) driven by Selenium. Sign-in (the key pair and a one-time link), a job
appearing and finishing live with its chart gaining points, a stop from the page, an endpoint's
page and its delete, and what an unsigned request or a form without its CSRF token gets.
Screenshots go to $CLARY_TEST_ARTIFACTS (tests/compat/artifacts by default)."""
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import (CLARY, deploy, job_request, unique, upload_code, wait_endpoint, wait_for,
                      wait_secondary)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.environ.get("CLARY_TEST_ARTIFACTS", os.path.join(HERE, "artifacts"))
CHROMEDRIVER = shutil.which("chromedriver")
# Debian's /usr/bin/chromium is a wrapper script; the browser itself lives beside the driver's.
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)
BASE = "/_clary/console/"

pytestmark = pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM),
                                reason="Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them as root)")


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,1200", "--disable-extensions", "--no-first-run"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(driver, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver.save_screenshot(os.path.join(ARTIFACTS, "console-%s.png" % name))


def wait(driver, cond, timeout=60, what="the page"):
    try:
        # A live fragment may be swapped between finding an element and reading it.
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: cond(d))
    except TimeoutException:
        shot(driver, "timeout")
        raise AssertionError("%s did not happen within %ss" % (what, timeout))


def text(driver, element_id):
    """The text of an element that a live update may replace meanwhile."""
    return wait(driver, lambda d: d.find_element(By.ID, element_id).text or " ", 10, "#" + element_id)


def click(driver, element_id):
    """Clicks an element of a live fragment (found again if it was swapped meanwhile)."""
    wait(driver, lambda d: d.find_element(By.ID, element_id).click() or True, 10, "clicking #" + element_id)


def css(driver, selector):
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def sign_in(driver, server):
    env = server.env()
    driver.delete_all_cookies()
    driver.get(server.url + BASE + "sign-in")
    driver.find_element(By.ID, "access_key").send_keys(env["AWS_ACCESS_KEY_ID"])
    driver.find_element(By.ID, "secret_key").send_keys(env["AWS_SECRET_ACCESS_KEY"])
    driver.find_element(By.ID, "sign-in").click()
    wait(driver, lambda d: d.current_url.endswith(BASE + "training-jobs"), 10, "signing in")


def raw(server, method, path, headers=None, body=None, cookies=False):
    """One plain HTTP request, redirects not followed; with `cookies`, the Set-Cookie values too."""
    host, port = server.listen.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode(errors="replace"))
    set_cookies = [v.split(";", 1)[0] for k, v in r.getheaders() if k.lower() == "set-cookie"]
    c.close()
    return out + (set_cookies,) if cookies else out


def http_sign_in(server, access_key, secret_key):
    """Signs in with the form over plain HTTP: (status, the cookies set)."""
    _, _, page, cookies = raw(server, "GET", BASE + "sign-in", cookies=True)
    form_token = re.search(r'name="form" value="([0-9a-f]+)"', page).group(1)
    body = urllib.parse.urlencode({"form": form_token, "access_key": access_key, "secret_key": secret_key})
    status, _, _, set_cookies = raw(server, "POST", BASE + "sign-in", {
        "Cookie": "; ".join(cookies), "Content-Type": "application/x-www-form-urlencoded"}, body, cookies=True)
    return status, set_cookies


METRIC_SCRIPT = """
import sys, time
for i in range(1, 13):
    print("epoch %d loss=%f" % (i, 1.0 / i), flush=True)
    time.sleep(0.5)
print("done <b>not markup</b>", flush=True)
"""

SLOW_SCRIPT = """
import time
print("waiting to be stopped", flush=True)
time.sleep(120)
"""


def start_job(sm, s3, bucket, prefix, script, metrics=False):
    name = unique(prefix)
    uri = upload_code(s3, bucket, name, {"train.py": script})
    req = job_request(name, bucket, uri)
    if metrics:
        req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}]
    sm.create_training_job(**req)
    return name


def test_unsigned_requests_get_nothing(server, sm, s3, bucket):
    name = start_job(sm, s3, bucket, "console-unsigned", "print('hi')")
    status, headers, body = raw(server, "GET", BASE + "training-jobs")
    assert status == 303 and headers["location"] == BASE + "sign-in" and body == ""
    status, _, body = raw(server, "GET", BASE + "training-jobs/%s" % name)
    assert status == 303 and name not in body
    status, _, body = raw(server, "GET", BASE + "training-jobs/%s/events" % name)
    assert status == 401 and name not in body
    status, _, _ = raw(server, "POST", BASE + "training-jobs/%s/stop" % name,
                       {"Content-Type": "application/x-www-form-urlencoded"}, "csrf=x")
    assert status == 401
    # A forged session cookie is nobody, and the sign-in form holds no data.
    status, _, _ = raw(server, "GET", BASE + "training-jobs", {"Cookie": "clary_console=" + "0" * 64})
    assert status == 303
    status, _, body = raw(server, "GET", BASE + "sign-in")
    assert status == 200 and name not in body
    wait_for(sm, name, timeout=120)


def test_sign_in_then_a_job_appears_runs_and_finishes_live(browser, server, sm, s3, bucket):
    env = server.env()
    # The wrong secret (or any key that is not the server's) is refused.
    browser.delete_all_cookies()
    browser.get(server.url + BASE + "sign-in")
    browser.find_element(By.ID, "access_key").send_keys(env["AWS_ACCESS_KEY_ID"])
    browser.find_element(By.ID, "secret_key").send_keys("not-the-secret")
    browser.find_element(By.ID, "sign-in").click()
    assert "not the server's credentials" in text(browser, "sign-in-error")
    sign_in(browser, server)
    cookie = next(c for c in browser.get_cookies() if c["name"] == "clary_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/_clary/console"
    assert env["AWS_SECRET_ACCESS_KEY"] not in browser.page_source

    # The listing is open before the job exists; the job appears without a reload.
    wait(browser, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "live", 10, "the listing's stream")
    marker = browser.execute_script("window.__sameDocument = 1; return 1")
    name = start_job(sm, s3, bucket, "console-live", METRIC_SCRIPT, metrics=True)
    wait(browser, lambda d: css(d, 'tr[data-job="%s"]' % name), 15, "the new job's row")
    assert browser.execute_script("return window.__sameDocument") == marker, "the page reloaded"
    shot(browser, "jobs-list")
    # Search and filter (pages are read from SQL with the same filters).
    search = browser.find_element(By.ID, "search")
    search.send_keys(name)
    search.submit()
    wait(browser, lambda d: "q=" in d.current_url, 10, "the search")
    assert [r.get_attribute("data-job") for r in browser.find_elements(By.CSS_SELECTOR, "#rows tr[data-job]")] == [name]

    wait(browser, lambda d: d.find_element(By.LINK_TEXT, name).click() or True, 10, "opening the job")
    wait_secondary(sm, name, "Training", timeout=120)
    browser.execute_script("window.__sameDocument = 2")

    def points(d):
        chart = css(d, 'figure[data-chart="loss"]')
        return int(chart.get_attribute("data-points")) if chart else 0
    first = wait(browser, lambda d: points(d) or None, 60, "the loss chart's first points")
    wait(browser, lambda d: points(d) > first, 30, "the loss chart gaining points")
    assert css(browser, 'figure[data-chart="loss"] canvas'), "uPlot drew the chart"
    shot(browser, "job-running")

    wait(browser, lambda d: "Completed" in d.find_element(By.CSS_SELECTOR, "#status [data-status]").text, 120,
         "the job's status turning Completed")
    assert browser.execute_script("return window.__sameDocument") == 2, "the page reloaded"
    assert points(browser) >= 12
    logs = text(browser, "logs")
    assert "epoch 12 loss=" in logs
    # A log line is text, never markup.
    assert "done <b>not markup</b>" in logs
    timeline = text(browser, "timeline")
    for stage in ("Starting", "Downloading", "Training", "Uploading", "Completed"):
        assert stage in timeline
    assert text(browser, "artifacts").startswith("s3://%s/output/%s/" % (bucket, name))
    assert "s3://%s/output/%s/output/model.tar.gz" % (bucket, name) in text(browser, "output-objects")
    assert not css(browser, "#stop"), "an ended job has no stop button"
    wait(browser, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "ended", 15, "the stream ending")
    shot(browser, "job-completed")


def test_stop_from_the_page_and_csrf(browser, server, sm, s3, bucket):
    sign_in(browser, server)
    name = start_job(sm, s3, bucket, "console-stop", SLOW_SCRIPT)
    wait_secondary(sm, name, "Training", timeout=120)

    # The running job's own scoped key pair cannot sign in; the server's can.
    [spec_path] = glob.glob(os.path.join(server.data_dir, "jobs", name, "*", "spec.json"))
    with open(spec_path) as f:
        key = json.load(f)
    status, set_cookies = http_sign_in(server, key["access_key"], key["secret_key"])
    assert status == 401 and not any(c.startswith("clary_console=") and len(c) > 20 for c in set_cookies)
    env = server.env()
    status, set_cookies = http_sign_in(server, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    assert status == 303 and any(c.startswith("clary_console=") and len(c) > 20 for c in set_cookies)

    browser.get(server.url + BASE + "training-jobs/" + name)

    # The session's cookie without the page's CSRF token does nothing.
    session = next(c for c in browser.get_cookies() if c["name"] == "clary_console")["value"]
    for form in ("", "csrf=" + "0" * 64):
        status, _, body = raw(server, "POST", BASE + "training-jobs/%s/stop" % name,
                              {"Cookie": "clary_console=" + session,
                               "Content-Type": "application/x-www-form-urlencoded"}, form)
        assert status == 403 and "CSRF" in body
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"

    # Dismissing the confirmation stops nothing; accepting it stops the job.
    click(browser, "stop")
    browser.switch_to.alert.dismiss()
    time.sleep(0.5)
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"
    click(browser, "stop")
    alert = browser.switch_to.alert
    assert name in alert.text
    alert.accept()
    wait(browser, lambda d: "Stopped" in d.find_element(By.CSS_SELECTOR, "#status [data-status]").text, 60,
         "the job's status turning Stopped")
    assert wait_for(sm, name, timeout=30)["TrainingJobStatus"] == "Stopped"
    shot(browser, "job-stopped")


def test_a_one_time_link_signs_in_once(browser, server):
    out = subprocess.run([CLARY, "console", "--data-dir", server.data_dir], check=True,
                         capture_output=True, text=True).stdout
    assert (server.url + BASE) in out
    link = re.search(r"(http://\S+sign-in\?link=\S+)", out).group(1)
    assert server.env()["AWS_SECRET_ACCESS_KEY"] not in out
    browser.delete_all_cookies()
    browser.get(link)
    browser.find_element(By.ID, "sign-in").click()
    wait(browser, lambda d: d.current_url.endswith(BASE + "training-jobs"), 10, "signing in by link")
    # Used once: a second browser session gets no way in with it.
    browser.delete_all_cookies()
    browser.get(link)
    browser.find_element(By.ID, "sign-in").click()
    assert "used already" in text(browser, "sign-in-error")
    status, _, _ = raw(server, "GET", BASE + "training-jobs",
                       {"Cookie": "; ".join("%s=%s" % (c["name"], c["value"]) for c in browser.get_cookies())})
    assert status == 303


TRANSFORM = '''
import json
def model_fn(model_dir):
    return {"scale": 3}
def transform_fn(model, data, content_type, accept):
    print("scaling <%s>" % data.decode() if isinstance(data, bytes) else data, flush=True)
    return json.dumps([v * model["scale"] for v in json.loads(data)]), "application/json"
'''


def test_an_endpoints_page_shows_its_instances_and_deletes_it(browser, server, sm, s3, rt, bucket):
    sign_in(browser, server)
    name = unique("console-ep")
    deploy(sm, s3, bucket, name, {"code/inference.py": TRANSFORM})
    browser.get(server.url + BASE + "endpoints/" + name)
    wait(browser, lambda d: "InService" in d.find_element(By.CSS_SELECTOR, "#status [data-status]").text, 180,
         "the endpoint turning InService live")
    assert "Healthy" in text(browser, "instances")
    assert "AllTraffic" in text(browser, "variants")
    wait(browser, lambda d: "model loaded" in d.find_element(By.ID, "logs").text, 30, "the endpoint's log")

    # Under load, the invocations chart moves (one point a second per variant) and shows the
    # calls; the latency chart appears with p50 and p99.
    def chart(d, title):
        return css(d, 'figure[data-chart="%s"]' % title)
    wait(browser, lambda d: chart(d, "Invocations per second"), 15, "the invocations chart")
    before = int(chart(browser, "Invocations per second").get_attribute("data-points"))
    stop = threading.Event()

    def load():
        while not stop.is_set():
            rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[1, 2]")
    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        wait(browser, lambda d: float(chart(d, "Invocations per second").get_attribute("data-max") or 0) >= 1
             and int(chart(d, "Invocations per second").get_attribute("data-points")) > before, 20,
             "the invocations chart moving under load")
        wait(browser, lambda d: chart(d, "Latency (ms)") and chart(d, "Latency (ms)").find_elements(By.TAG_NAME, "canvas"),
             10, "the latency chart")
        shot(browser, "endpoint")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert "p99 AllTraffic" in chart(browser, "Latency (ms)").text
    assert "Errors per second" in text(browser, "charts")
    # The listings name it and its model.
    browser.get(server.url + BASE + "endpoints")
    wait(browser, lambda d: name in text(d, "endpoints") and "InService" in text(d, "endpoints"), 10, "the endpoints listing")
    browser.get(server.url + BASE + "models")
    assert "s3://%s/models/%s/model.tar.gz" % (bucket, name) in text(browser, "models")
    shot(browser, "models")
    browser.get(server.url + BASE + "endpoints/" + name)
    click(browser, "delete")
    alert = browser.switch_to.alert
    assert name in alert.text
    alert.accept()
    wait(browser, lambda d: "deleted" in d.find_element(By.ID, "status").text or
         "Deleting" in d.find_element(By.ID, "status").text, 60, "the endpoint going")
    deadline = time.time() + 60
    while time.time() < deadline and any(e["EndpointName"] == name for e in sm.list_endpoints(MaxResults=100)["Endpoints"]):
        time.sleep(0.25)
    assert not any(e["EndpointName"] == name for e in sm.list_endpoints(MaxResults=100)["Endpoints"])


def test_a_tuning_jobs_page_ranks_trials_and_charts_the_objective(browser, server, sm, s3, bucket):
    from test_tuning import SCRIPT as TUNE, tuning_request, wait_tuning
    sign_in(browser, server)
    name = unique("console-tune")[:32]
    source = upload_code(s3, bucket, unique("console-tune-code"), {"tune.py": TUNE})
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, bucket, source, max_jobs=3, parallel=3, seed=3))
    browser.get(server.url + BASE + "tuning-jobs/" + name)
    wait(browser, lambda d: "Completed" in d.find_element(By.CSS_SELECTOR, "#status [data-status]").text, 180,
         "the tuning job completing live")
    d = wait_tuning(sm, name)
    # Once its stream has ended the page no longer changes under the reads below.
    wait(browser, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "ended", 15, "the stream ending")
    wait(browser, lambda d: css(d, 'figure[data-chart="objective-over-time"]')
         and css(d, 'figure[data-chart="objective-over-time"]').get_attribute("data-points") == "3", 15,
         "the objective chart's three points")
    for p in ("lr", "layers", "act"):
        assert css(browser, 'figure[data-chart="param-%s"] canvas' % p), p
    rows = browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")
    assert len(rows) == 3
    # Best first: the first row is the tuning job's best trial.
    best = d["BestTrainingJob"]["TrainingJobName"]
    assert best in rows[0].text and text(browser, "best-trial") == best
    shot(browser, "tuning")


def test_a_processing_job_appears_logs_live_and_stops_from_its_page(browser, server, sm, s3, bucket):
    from test_processing import create_job, wait_processing
    sign_in(browser, server)
    browser.get(server.url + BASE + "processing-jobs")
    wait(browser, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "live", 10, "the listing's stream")
    name = unique("console-proc")
    create_job(sm, s3, bucket, name, ["--mode", "none", "--sleep", "120"])
    wait(browser, lambda d: css(d, 'tr[data-job="%s"]' % name), 15, "the new processing job's row")
    wait(browser, lambda d: d.find_element(By.LINK_TEXT, name).click() or True, 10, "opening the job")
    wait(browser, lambda d: "still processing" in d.find_element(By.ID, "logs").text, 60, "its log, live")
    assert "s3://%s/%s/code/" % (bucket, name) in text(browser, "inputs")
    assert "Starting" in text(browser, "timeline")
    shot(browser, "processing-running")
    click(browser, "stop")
    alert = browser.switch_to.alert
    assert name in alert.text
    alert.accept()
    wait(browser, lambda d: "Stopped" in d.find_element(By.CSS_SELECTOR, "#status [data-status]").text, 60,
         "the processing job's status turning Stopped")
    assert wait_processing(sm, name, timeout=30)["ProcessingJobStatus"] == "Stopped"
