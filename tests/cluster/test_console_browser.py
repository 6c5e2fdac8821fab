"""The console in a real headless Chromium (Debian's package, driven by Selenium) against the
local node loaded with tests/dashboard_scenario.py: the overview charts render with data, the
Acknowledge button changes the alert in the cluster, the alert page shows evidence, timeline
and response steps, and no request leaves 127.0.0.1 (the browser's own network log).

The screenshot it takes is docs/console.png (the README shows it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from dashboard_scenario import Loaded, load
from pacsguard.engines.alerts import ACKNOWLEDGED, AlertStore
from pacsguard.services.console.app import ConsoleConfig, create_app
from pacsguard.services.install import uninstall
from testnode import make_settings

pytestmark = pytest.mark.cluster
# The README's picture is rewritten only on request (PACSGUARD_UPDATE_SCREENSHOT=1), so a test
# run leaves the work tree as it found it; otherwise the shot goes to the test's temp folder.
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1640"]


def chromium() -> tuple[str, str]:
    """(chromium, chromedriver) from Debian's packages; installed when missing and running as root."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Chromium is not installed and this is not root: apt-get install -y chromium chromium-driver")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if done.returncode != 0 or not (browser and driver):
        pytest.skip(f"apt-get install chromium chromium-driver failed: {done.stderr.strip()[-300:]}")
    return browser, driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def loaded(cluster_url: str) -> Iterator[Loaded]:
    settings = make_settings(cluster_url, "pgtcons", "cons")
    data = load(settings)
    yield data
    uninstall(data.cluster, settings, purge=True)


@pytest.fixture(scope="module")
def console(loaded: Loaded) -> Iterator[str]:
    config = ConsoleConfig.build("127.0.0.1", free_port(), environ={})
    server = uvicorn.Server(uvicorn.Config(create_app(loaded.cluster, loaded.settings, config), host=config.host,
                                           port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
        time.sleep(0.05)
    yield config.url
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium()
    profile = tempfile.mkdtemp(prefix="pacsguard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


CHART_LAYOUT_FAULTS = """
const faults = [];
const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
const inside = (a, b) => a.left >= b.left - 1 && a.right <= b.right + 1 && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
for (const chart of document.querySelectorAll('#charts .chart')) {
  const box = chart.getBoundingClientRect();
  const title = chart.querySelector('.gtitle');
  const bar = chart.querySelector('.modebar');
  if (title && bar && meet(title.getBoundingClientRect(), bar.getBoundingClientRect()))
    faults.push(chart.id + ': the toolbar covers the title ' + title.textContent);
  const legend = chart.querySelector('.legend');
  for (const label of chart.querySelectorAll('.xtick text, .xtick2 text, .ytick text')) {
    const r = label.getBoundingClientRect();
    if (!r.width) continue;
    if (!inside(r, box)) faults.push(chart.id + ': axis label ' + label.textContent + ' is cut off');
    if (legend && meet(r, legend.getBoundingClientRect()))
      faults.push(chart.id + ': the legend covers axis label ' + label.textContent);
  }
}
return faults;
"""


def wait_for(driver: Any, script: str, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def requested_urls(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_console_in_a_real_browser(loaded: Loaded, console: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(console)
    wait_for(browser, "return document.body.dataset.charts === 'rendered' && document.body.dataset.alerts === 'loaded'")

    # the overview charts: one per overview panel, each with data points, drawn by plotly (SVG)
    charts = browser.find_elements(By.CSS_SELECTOR, "#charts .chart")
    keys = {c.get_attribute("id") for c in charts}
    assert {"chart-overview-signals", "chart-overview-open-alerts", "chart-overview-events-by-source",
            "chart-overview-failures"} <= keys
    for chart in charts:
        assert int(chart.get_attribute("data-points")) > 0, f"{chart.get_attribute('id')} has no data"
        assert chart.find_elements(By.CSS_SELECTOR, "svg.main-svg"), f"{chart.get_attribute('id')} not drawn"
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart-overview-signals .bars path")
    assert len(bars) >= 5, "the signals chart drew no bars"
    slices = browser.find_elements(By.CSS_SELECTOR, "#chart-overview-events-by-source .slice")
    assert slices, "the events-by-source pie is empty"

    # every chart's labels are whole: the axis labels (the date line under the times too) inside the
    # chart and clear of its legend, the title clear of the plot toolbar (issue 21)
    layout_faults = browser.execute_script(CHART_LAYOUT_FAULTS)
    assert layout_faults == [], layout_faults

    rows = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
    assert len(rows) >= 5, "the scenario's open alerts are not listed"
    shot = README_SCREENSHOT if os.environ.get("PACSGUARD_UPDATE_SCREENSHOT") else tmp_path / "console.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # acknowledge the first open alert by clicking its button: the cluster holds the new status
    button = browser.find_element(By.CSS_SELECTOR, "#alerts tbody tr button[data-action='ack']")
    alert_id = button.get_attribute("data-id")
    button.click()
    wait_for(browser, f"const r = document.querySelector(\"#alerts tr[data-alert-id='{alert_id}'] .status\");"
                      " return r && r.textContent === 'acknowledged';")
    stored = AlertStore(loaded.cluster, loaded.settings.index("alerts")).get(alert_id)
    assert stored.state == ACKNOWLEDGED and stored.source["status"] == "acknowledged"
    assert stored.source["history"][-1]["by"] == "console"

    # the alert's page: evidence query, the entity's timeline, the rule's response steps
    browser.get(f"{console}alerts/{alert_id}")
    assert browser.find_element(By.ID, "alert-status").text == "acknowledged"
    assert browser.find_element(By.ID, "alert-condition").text == "active"
    assert browser.find_element(By.ID, "evidence").text.strip()
    timeline = browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    assert timeline and "no events" not in timeline[0].text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#steps li")) == 5

    # nothing was loaded from anywhere but the console, and the strict CSP blocked nothing it needs
    # (chrome:// pages of the browser itself, such as its new-tab page, are not network requests)
    urls = [u for u in requested_urls(browser) if not u.startswith(("chrome://", "chrome-untrusted://"))]
    outside = [u for u in urls if not u.startswith((console, "data:", "blob:"))]
    assert urls and not outside, outside
    assert any(u.endswith("/static/vendor/plotly.min.js") for u in urls)
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_state_changes_need_the_csrf_token(loaded: Loaded, console: str) -> None:
    alert = AlertStore(loaded.cluster, loaded.settings.index("alerts")).search(states=["ACTIVE"], size=1)[0]
    request = urllib.request.Request(f"{console}api/alerts/{alert.id}/ack", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert AlertStore(loaded.cluster, loaded.settings.index("alerts")).get(alert.id).state == "ACTIVE"
    # a page from another origin cannot read the token, and a forged Host (DNS rebinding) is refused
    rebinding = urllib.request.Request(console, headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as bad_host:
        urllib.request.urlopen(rebinding, timeout=10)
    assert bad_host.value.code == 400
