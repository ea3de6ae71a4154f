"""The review desk in a real browser (headless Chromium through Selenium and the system chromedriver).

A uvicorn server on 127.0.0.1 (a free port) serves the tiny tagger of the desk tests with a write
token. The browser: is refused a write without the token; uploads a seed document and sees its
paragraphs; toggles a tag and the label store holds the correction; reloads and still sees it;
retrains and reads the gate report; promotes. Screenshots go to the test's temporary folder.
Skipped, with the reason, only where no Chromium/chromedriver can be found.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from policylens.cli.desk import REVIEW_SOURCE
from policylens.paths import SEEDS_DIR

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
SEED = min(SEEDS_DIR.glob("*.txt"))


def _missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None:
        return "no chromium binary on PATH (apt-get install chromium chromium-driver fonts-noto-cjk)"
    if CHROMEDRIVER is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from test_desk import TOKEN, desk_app, make_world


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_tagger_dir, tiny_backbone_dir, tmp_path_factory):
    """A real uvicorn server in a thread; yields (base URL, backend)."""
    import uvicorn

    root = tmp_path_factory.mktemp("desk-browser")
    backend, pointer = make_world(root, tiny_tagger_dir, tiny_backbone_dir)
    app = desk_app(pointer, backend, write_token=TOKEN, data_dir=root / "desk")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", backend
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                "--lang=zh-CN"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console: script errors, CSP reports
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def until(driver, condition, timeout: float = 60):
    """Wait for `condition`; an element replaced while it was read (the page re-rendered) is polled again."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException]).until(condition)


@contextmanager
def step(driver, shots: Path, name: str) -> Iterator[None]:
    """One step of the walk; a failure says where the page was and what it said, with a screenshot."""
    try:
        yield
    except Exception as err:
        driver.save_screenshot(str(shots / f"failed-{name}.png"))
        banner = driver.find_elements(By.ID, "banner")
        said = banner[0].text if banner and banner[0].is_displayed() else ""
        raise AssertionError(f"step {name!r} failed at {driver.current_url} (banner: {said!r}; screenshot in {shots}): "
                             f"{type(err).__name__}: {err}") from err


def banner_text(driver) -> str:
    until(driver, EC.visibility_of_element_located((By.ID, "banner")), 20)
    return driver.find_element(By.ID, "banner").text


def test_the_desk_in_a_browser(server, browser, shots):
    base, backend = server
    driver = browser

    with step(driver, shots, "refused-without-token"):
        driver.get(base + "/")
        driver.find_element(By.ID, "files").send_keys(str(SEED))
        driver.find_element(By.ID, "upload").click()
        message = banner_text(driver)
        assert "Upload refused" in message and "no write token was sent" in message
        assert backend.store.events() == [] and "No documents" in driver.find_element(By.TAG_NAME, "main").text
        driver.save_screenshot(str(shots / "1-refused-without-token.png"))

    with step(driver, shots, "upload"):  # with the token: upload a seed document and see its paragraphs
        driver.find_element(By.ID, "write-token").send_keys(TOKEN)
        driver.find_element(By.ID, "upload").click()
        until(driver, EC.element_to_be_clickable((By.CSS_SELECTOR, "#documents a.doc-link")), 120)
        driver.save_screenshot(str(shots / "2-inbox.png"))
        driver.find_element(By.CSS_SELECTOR, "#documents a.doc-link").click()
        until(driver, EC.presence_of_element_located((By.CSS_SELECTOR, "#paragraphs .para")))
        paragraphs = driver.find_elements(By.CSS_SELECTOR, "#paragraphs .para")
        assert len(paragraphs) >= 3
        first_text = paragraphs[0].find_element(By.CSS_SELECTOR, ".ptext").text
        assert first_text[:12] in SEED.read_text(encoding="utf-8").replace("\n", "")  # the document's own words
        driver.save_screenshot(str(shots / "3-document.png"))

    with step(driver, shots, "toggle"):  # the label store holds the correction
        para = paragraphs[0]
        index = para.get_attribute("data-index")
        chip = para.find_elements(By.CSS_SELECTOR, ".chip.tag")[0]
        label = chip.get_attribute("data-label")
        was_on = "on" in chip.get_attribute("class").split()
        chip.click()
        until(driver, lambda d: "reviewed" in d.find_element(By.ID, f"p-{index}").find_element(By.CSS_SELECTOR, ".state").text)
        [event] = backend.store.events()
        assert event["source"] == REVIEW_SOURCE and event["time"]
        [row] = event["rows"]
        assert (label in row["labels"]) is (not was_on)
        assert row["review"]["model_version"] == "tiny-test"

    with step(driver, shots, "reload"):  # the correction is still there
        driver.refresh()
        para = until(driver, EC.presence_of_element_located((By.ID, f"p-{index}")))
        chip = para.find_element(By.CSS_SELECTOR, f'.chip.tag[data-label="{label}"]')
        assert ("on" in chip.get_attribute("class").split()) is (not was_on)
        assert "reviewed" in para.find_element(By.CSS_SELECTOR, ".state").text
        driver.save_screenshot(str(shots / "4-after-reload.png"))

    with step(driver, shots, "retrain"):  # on the tiny model, then read the gate report
        driver.get(base + "/models")
        driver.find_element(By.ID, "retrain").click()
        until(driver, EC.presence_of_element_located((By.ID, "report")), 300)
        report = driver.find_element(By.ID, "report").text
        assert "Gate report of v0002" in report and "old F1" in report and "90% interval" in report
        assert driver.find_elements(By.CSS_SELECTOR, "#f1-table tbody tr")
        driver.save_screenshot(str(shots / "5-gate-report.png"))

    with step(driver, shots, "promote"):  # the served model swaps without a restart
        driver.find_element(By.CSS_SELECTOR, 'button.promote[data-version="v0002"]').click()
        until(driver, lambda d: d.find_element(By.ID, "current-version").text == "v0002", 120)
        assert backend.registry.current() == "v0002"
        assert driver.find_element(By.ID, "serving-version").text.startswith("v0002")
        driver.save_screenshot(str(shots / "6-promoted.png"))

    assert len(list(shots.glob("*.png"))) == 6
    # no script error and no Content-Security-Policy violation on any page (the refused write's 403 is expected)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and "status of 403" not in e["message"]]
    assert errors == []
