"""The dashboard, and the API reference at /docs, in a real browser: Debian's headless
Chromium driven by Selenium through the system chromedriver, against a real gunicorn
gateway, a real worker and a real dispatcher. Each dashboard page is saved to
docs/screenshots/ on the way."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from taskq import keys
from tests.conftest import API_KEY, HEADERS, ROOT, free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = ROOT / "docs" / "screenshots"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]

pytestmark = [
    pytest.mark.processes,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="no browser: install Debian's chromium and chromium-driver (.ci/bootstrap does, where apt-get can)",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for driver.get_log
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """docs/screenshots/ when TASKQ_SCREENSHOTS=1 (to refresh the docs), else a
    temporary directory: the pages are captured either way."""
    where = SHOTS if os.environ.get("TASKQ_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    where.mkdir(parents=True, exist_ok=True)
    return where


def shot(driver, where: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    """The whole page, however long: the window is made as tall as it for the shot."""
    chrome = driver.get_window_size()["height"] - driver.execute_script("return window.innerHeight")
    tall = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(900, min(tall + chrome, 3000)))
    try:
        assert driver.save_screenshot(str(where / f"{name}.png"))
    finally:
        driver.set_window_size(1280, 900)


def api(url: str, method: str, path: str, body: object = None) -> dict:
    r = requests.request(method, url + path, json=body, headers=HEADERS, timeout=10)
    assert r.status_code < 300, r.text
    return r.json()  # type: ignore[no-any-return]


def text(driver, css: str) -> str:  # type: ignore[no-untyped-def]
    """The element's text; empty while the page is being drawn again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_sign_in_watch_a_run_live_cancel_filter_groups_and_redeliver(browser, shots, gunicorn, worker, spawn, broker):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    url = gunicorn()

    # Sign in: a wrong key is refused, the right one lands on the front page.
    d.get(url + "/dashboard/runs")
    assert "/dashboard/login" in d.current_url
    d.find_element(By.ID, "api_key").send_keys("wrong-key")
    d.find_element(By.ID, "sign-in").click()
    wait_until(lambda: "not known" in text(d, "#login-error"))
    d.find_element(By.ID, "api_key").send_keys(API_KEY)
    shot(d, shots, "login")
    d.find_element(By.ID, "sign-in").click()
    wait_until(lambda: d.current_url.endswith("/dashboard/runs"))
    cookie = d.get_cookie("taskq_dashboard")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    # Cancel a queued run from its page (no worker yet).
    doomed = api(url, "POST", "/v1/tasks/runs", {"input": {"n": 0}, "processor": "echo"})["run_id"]
    d.get(f"{url}/dashboard/runs/{doomed}")
    assert text(d, "#run-status") == "queued"
    d.find_element(By.ID, "cancel").click()
    wait_until(lambda: "run cancelled" in text(d, ".flash"))
    assert text(d, "#run-status") == "cancelled"

    # Watch a run go queued -> running -> completed, live, then see its output.
    live = api(
        url, "POST", "/v1/tasks/runs", {"input": {"seconds": 2}, "processor": "sleep", "metadata": {"team": "ops"}}
    )["run_id"]
    d.get(f"{url}/dashboard/runs/{live}")
    assert text(d, "#run-status") == "queued"
    worker(name="browser-worker")
    wait_until(lambda: text(d, "#run-status") == "running", timeout_s=20)
    wait_until(lambda: "s to go" in text(d, "#events"), timeout_s=20)
    shot(d, shots, "run-live")
    wait_until(lambda: '"slept": 2' in text(d, "#output"), timeout_s=30)
    assert text(d, "#run-status") == "completed"
    assert "browser-worker" in text(d, "#run-worker") and text(d, "#run-queue") == "default"
    shot(d, shots, "run")

    # Answer a run's questions from its page: a yes/no field, then a line of text.
    asking = api(url, "POST", "/v1/tasks/runs", {"input": {"amount": 12}, "processor": "spend"})["run_id"]

    def asked(n: int) -> bool:
        got = api(url, "GET", f"/v1/tasks/runs/{asking}")
        return bool(got["status"] == "action_required" and got["attempts"] == n)

    wait_until(lambda: asked(1), timeout_s=20)
    d.get(f"{url}/dashboard/runs/{asking}")
    assert "approve spending 12?" in text(d, "#required-action")
    Select(d.find_element(By.NAME, "f.approved")).select_by_value("true")
    shot(d, shots, "run-question")
    d.find_element(By.ID, "answer").click()
    wait_until(lambda: "answer sent" in text(d, ".flash"))
    wait_until(lambda: asked(2), timeout_s=20)
    d.get(f"{url}/dashboard/runs/{asking}")
    d.find_element(By.NAME, "f.").send_keys("for the ledger")
    d.find_element(By.ID, "answer").click()
    wait_until(lambda: '"note": "for the ledger"' in text(d, "#output"), timeout_s=30)

    # The runs list, newest first, filtered by status with the form.
    d.get(url + "/dashboard/runs")
    ids = [a.text for a in d.find_elements(By.CSS_SELECTOR, "a.run-link")]
    assert ids[:3] == [asking, live, doomed]
    Select(d.find_element(By.ID, "f-status")).select_by_value("cancelled")
    d.find_element(By.ID, "apply").click()
    wait_until(lambda: "status=cancelled" in d.current_url)
    assert [a.text for a in d.find_elements(By.CSS_SELECTOR, "a.run-link")] == [doomed]

    # A group's progress moves live until every run has finished.
    gid = api(url, "POST", "/v1/tasks/groups", {"metadata": {"batch": "nightly"}})["taskgroup_id"]
    d.get(f"{url}/dashboard/groups/{gid}")
    inputs = [{"input": {"seconds": 0.3}, "processor": "sleep"} for _ in range(4)] + [
        {"input": {}, "processor": "broken"}
    ]
    api(url, "POST", f"/v1/tasks/groups/{gid}/runs", {"inputs": inputs})
    d.get(f"{url}/dashboard/groups/{gid}")
    wait_until(lambda: "all 5 runs finished" in text(d, "#group-message"), timeout_s=40)
    assert "completed 4" in text(d, "#group-bar") and "failed 1" in text(d, "#group-bar")
    # Once all have ended the page is drawn again with every run's final status.
    wait_until(lambda: (t := text(d, "#group-runs")) and "queued" not in t and "running" not in t, timeout_s=20)
    assert text(d, "#group-runs").count("completed") == 4
    shot(d, shots, "group")

    # Cancel a group from its page: its running runs stop and end cancelled.
    doomed_group = api(url, "POST", "/v1/tasks/groups", {"metadata": {"batch": "mistake"}})["taskgroup_id"]
    api(
        url,
        "POST",
        f"/v1/tasks/groups/{doomed_group}/runs",
        {"inputs": [{"input": {"seconds": 60}, "processor": "sleep"}] * 3},
    )
    d.get(f"{url}/dashboard/groups/{doomed_group}")
    d.find_element(By.ID, "cancel-group").click()
    wait_until(lambda: "group cancelled" in text(d, ".flash"))
    wait_until(lambda: "all 3 runs finished" in text(d, "#group-message"), timeout_s=40)
    assert "cancelled 3" in text(d, "#group-bar")

    d.get(url + "/dashboard/groups")
    assert gid in text(d, "#groups") and "cancelled 3" in text(d, "#groups")
    shot(d, shots, "groups")

    # A webhook to a receiver that is down ends dead-lettered; redeliver it.
    down = f"http://127.0.0.1:{free_port()}/hook"
    hooked = api(url, "POST", "/v1/tasks/runs", {"input": {}, "processor": "echo", "webhook": {"url": down}})["run_id"]
    spawn("dispatcher", settings=broker.settings)

    def delivery_states() -> list[str]:
        return [x["state"] for x in api(url, "GET", f"/v1/tasks/runs/{hooked}/webhook-deliveries")["deliveries"]]

    wait_until(lambda: delivery_states() == ["dead"], timeout_s=40)
    d.get(url + "/dashboard/webhooks")
    assert hooked in text(d, "#dead")
    shot(d, shots, "webhooks")
    d.find_element(By.CSS_SELECTOR, "#dead button.redeliver").click()
    wait_until(lambda: "will be sent again" in text(d, ".flash"))

    # The runs list with errors and durations, its times on one line each.
    d.get(url + "/dashboard/runs")
    assert "failed" in text(d, "#runs")
    heights = {e.size["height"] for e in d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")}
    assert len(heights) == 1, heights  # no row wraps onto a second line
    shot(d, shots, "runs")

    # The front page: the last hour's chart, queues and the worker with what it serves
    # (the broker fixture's stand-in for a worker, no process, is taken away first).
    broker.redis.zrem(keys.WORKERS, "test-worker")
    broker.redis.delete(keys.worker("test-worker"))
    d.get(url + "/dashboard")
    assert "browser-worker" in text(d, "#workers") and "default" in text(d, "#queues")
    assert "spend" in text(d, "#workers")
    assert d.find_elements(By.CSS_SELECTOR, "#chart rect.minute")
    shot(d, shots, "home")

    # Sign out: the pages are closed again.
    d.find_element(By.ID, "logout").click()
    wait_until(lambda: "/dashboard/login" in d.current_url)
    d.get(url + "/dashboard/runs")
    assert "/dashboard/login" in d.current_url


def test_api_docs_render_every_operation_with_nothing_fetched_from_elsewhere(browser, shots, gunicorn):
    from selenium.webdriver.common.by import By

    d = browser
    url = gunicorn()
    doc = requests.get(url + "/openapi.json", timeout=10).json()
    expected = {
        (method.upper(), path, op["summary"]) for path, ops in doc["paths"].items() for method, op in ops.items()
    }
    assert doc["openapi"].startswith("3.1")

    d.get(url + "/docs")

    def shown() -> set[tuple[str, str, str]]:
        rows = d.execute_script(
            "return [...document.querySelectorAll('.opblock')].map(b => ["
            "b.querySelector('.opblock-summary-method')?.textContent,"
            "b.querySelector('.opblock-summary-path')?.getAttribute('data-path'),"
            "b.querySelector('.opblock-summary-description')?.textContent])"
        )
        return {tuple(row) for row in rows}

    # Every operation of the document is drawn: its method, its path and its summary.
    wait_until(lambda: shown() == expected, timeout_s=30)
    assert ("POST", "/v1/tasks/runs", doc["paths"]["/v1/tasks/runs"]["post"]["summary"]) in shown()
    assert "Unable to render" not in text(d, "body")

    # An operation opens on its request body, drawn from the 3.1 schema of RunInput.
    create = '.opblock-post:has(.opblock-summary-path[data-path="/v1/tasks/runs"])'
    d.find_element(By.CSS_SELECTOR, create + " .opblock-summary-control").click()
    wait_until(lambda: '"processor"' in text(d, create + " .opblock-body"), timeout_s=10)
    shot(d, shots, "api-docs")
    # And "Try it out" calls the gateway from the page.
    health = '.opblock-get:has(.opblock-summary-path[data-path="/healthz"])'
    d.find_element(By.CSS_SELECTOR, health + " .opblock-summary-control").click()
    wait_until(lambda: d.find_elements(By.CSS_SELECTOR, health + " .try-out__btn"), timeout_s=10)
    d.find_element(By.CSS_SELECTOR, health + " .try-out__btn").click()
    wait_until(lambda: d.find_elements(By.CSS_SELECTOR, health + " .execute"), timeout_s=10)
    d.find_element(By.CSS_SELECTOR, health + " .execute").click()
    wait_until(lambda: '"status": "ok"' in text(d, health + " .live-responses-table"), timeout_s=10)

    # Everything the page loaded came from the gateway, and the console has no error
    # (a Content-Security-Policy violation would be one).
    loaded = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(name.startswith(url + "/") for name in loaded), loaded
    assert url + "/healthz" in loaded
    assert [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"] == []
