"""The dashboard in a real browser: ``coinfer serve`` in a subprocess (three worker processes,
an API key), a few clients sending requests, and headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) opening ``/?key=KEY``. The graph, plan, Gantt and
charts must render, keep updating, and the graph must hold one node per device; a screenshot
is saved (and written to ``docs/img/dashboard.png`` with ``COINFER_SAVE_SCREENSHOT=1``).

Without a browser the test tries ``apt-get install`` (as root only, bounded), then skips —
unless ``COINFER_REQUIRE_BROWSER=1`` (CI sets it), where a missing browser is a failure."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from coinfer.runtime.processes import descendants as _descendants
from coinfer.runtime.processes import running as _running

MLP = "coinfer.zoo.tiny:tiny_mlp"
KEY = "dash-key-0123456789abcdef"
DEVICES = ("a", "b", "c", "d")  # d is in the cluster but not in the plan
PLAN = {
    "algo": "manual",
    "objective": "throughput",
    "stages": [{"pieces": [0, 1], "devices": ["a"]}, {"pieces": [2, 4], "devices": ["b", "c"]}],
    "predicted": {"latency_s": 0.05, "period_s": 0.02},
    "planning_time_s": 0.0,
}
PANELS = ("panel-graph", "panel-plan", "panel-gantt", "panel-throughput", "panel-latency")
REPO = Path(__file__).resolve().parents[2]
APT_TIMEOUT_S = 600

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _find_browser() -> tuple[str | None, str | None]:
    chromium = next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver",) if os.access(p, os.X_OK)), None
    )
    return chromium, driver


def _browser_or_reason() -> tuple[str, str] | str:
    """Chromium and its driver, installing them with apt-get when missing (root only)."""
    chromium, driver = _find_browser()
    if (chromium is None or driver is None) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for cmd in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):  # fmt: skip
                subprocess.run(cmd, env=env, capture_output=True, timeout=APT_TIMEOUT_S, check=True)
        except (subprocess.SubprocessError, OSError) as exc:
            return f"chromium/chromedriver missing and apt-get install failed: {exc}"
        chromium, driver = _find_browser()
    if chromium is None or driver is None:
        return (
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    return chromium, driver


def _unavailable(reason: str) -> None:
    if os.environ.get("COINFER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"COINFER_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    found = _browser_or_reason()
    if isinstance(found, str):
        _unavailable(found)
    chromium, driver_path = found
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1450", "--hide-scrollbars", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        opts.add_argument(arg)
    service = Service(executable_path=driver_path)
    try:
        driver = webdriver.Chrome(service=service, options=opts)
    except Exception as exc:
        _unavailable(f"headless chromium did not start: {type(exc).__name__}: {exc}")
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        browsers = _descendants(service.process.pid) if service.process else set()
        try:
            driver.quit()
        finally:
            service.stop()
        # Chromium's processes outlive quit() for a moment: wait (bounded) so that their
        # shutdown does not load the machine under the next test
        deadline = time.monotonic() + 15
        while any(_running(p) for p in browsers) and time.monotonic() < deadline:
            time.sleep(0.1)


def _cluster_yaml() -> str:
    rows = "\n".join(
        f"  - {{name: {d}, speed: {{gflops: 10}}, memory: 1GiB, "
        "emulate: {cpu_quota: 1.0, threads: 1}}"
        for d in DEVICES
    )
    pairs = [(u, v) for i, u in enumerate(DEVICES) for v in DEVICES[i + 1 :]]
    links = "\n".join(
        f"  - {{src: {u}, dst: {v}, bandwidth_mbps: 1000, latency_ms: 2}}" for u, v in pairs
    )
    return f"name: dash\nsource: a\ndevices:\n{rows}\nlinks:\n{links}\n"


@pytest.fixture
def server(tmp_path):
    """``coinfer serve`` in its own process group; killed with the group at the end."""
    (tmp_path / "cluster.yaml").write_text(_cluster_yaml())
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COINFER_API_KEY": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coinfer", "serve", MLP, "--input-shape", "1,64",
         "--partition", "sequential", "--cluster", str(tmp_path / "cluster.yaml"),
         "--plan", str(tmp_path / "plan.json"), "--port", "0", "--microbatch", "2",
         "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = _wait_for_url(proc)
        yield url
    finally:
        _stop(proc)


def _wait_for_url(proc: subprocess.Popen[str]) -> str:
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"on (http://\S+) ", line)
            if m and not found:
                found.append(m.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 90
    while not found and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not found:
        _stop(proc)
        err = proc.stderr.read()[-2000:] if proc.stderr else ""
        pytest.fail(f"the server did not start: {err}")
    url = found[0]
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("the server never answered /healthz with 200")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):  # anything left in the group
        os.killpg(proc.pid, signal.SIGKILL)


class Load:
    """A few clients sending requests until stopped (each request bounded by its timeout)."""

    def __init__(self, url: str, clients: int = 3):
        self.url = url
        self.stop = threading.Event()
        self.ok = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as c:
            while not self.stop.is_set():
                try:
                    r = c.post(f"{self.url}/v1/infer", json={"inputs": [[[0.25] * 64] * 2]})
                    self.ok += r.status_code == 200
                except httpx.HTTPError:
                    time.sleep(0.1)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(35)


def _wait(driver, script: str, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"the dashboard never showed {what} within {timeout_s:g} s")


def _option(driver, chart: str) -> dict:
    return driver.execute_script(
        "const c = echarts.getInstanceByDom(document.getElementById(arguments[0]));"
        "return c ? JSON.parse(JSON.stringify(c.getOption())) : null;",
        chart,
    )


def test_the_dashboard_renders_and_updates_in_a_browser(server, browser, tmp_path):
    url = server
    with Load(url) as load:
        browser.get(f"{url}/?key={KEY}")
        for panel in PANELS:
            _wait(browser, f"return document.getElementById('{panel}').dataset.rendered", panel)
        first = int(browser.execute_script("return document.body.dataset.updates"))
        time.sleep(3.5)
        later = int(browser.execute_script("return document.body.dataset.updates"))
        assert later > first >= 1, (first, later)

        graph = _option(browser, "graph")
        names = sorted(n["name"] for n in graph["series"][0]["data"])
        assert names == list(DEVICES)  # one node per device, the spare one too
        plan = browser.find_element("id", "plan").text
        assert "Stage 0" in plan and "Stage 1" in plan and "2 replicas" in plan

        # measured data arrives: a Gantt bar, a throughput point above zero, a latency
        _wait(browser, "const o = echarts.getInstanceByDom(document.getElementById('gantt'))"
              ".getOption(); return o.series[0].data.length > 0", "Gantt bars")  # fmt: skip
        _wait(browser, "const o = echarts.getInstanceByDom(document.getElementById('throughput'))"
              ".getOption(); return o.series[0].data.some(p => p[1] > 0)", "throughput")  # fmt: skip
        _wait(browser, "const o = echarts.getInstanceByDom(document.getElementById('latency'))"
              ".getOption(); return o.series[0].data.some(p => p[1] > 0)", "latency")  # fmt: skip
        assert browser.find_element("id", "status").text == "ok"
        assert browser.find_element("id", "model").text == "tiny_mlp"
        edges = _option(browser, "graph")["series"][0]["links"]
        assert any(e["lineStyle"]["type"] == "solid" for e in edges)  # a link carrying data

        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        if os.environ.get("COINFER_SAVE_SCREENSHOT") == "1":
            (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, REPO / "docs" / "img" / "dashboard.png")
        errors = [
            e["message"] for e in browser.get_log("browser")
            if e.get("level") == "SEVERE"
        ]  # fmt: skip
        assert not errors, errors
    assert load.ok > 0
