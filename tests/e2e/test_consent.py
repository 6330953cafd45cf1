"""Delegated mode in a real browser: Debian's chromium, headless, driven through chromedriver, opens
the app's consent page on the dev host, signs in and consents on the simulator's authorize page and
lands on the app's callback; the timer then subscribes the mailbox with the owner's token and a mail
sent to it is ingested."""

from __future__ import annotations

import base64
import hashlib
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from local.mailcheck import BlobReader, deliver, file_attachment, subscriptions, wait_for_manifests
from local.stack import Stack, StackConfig

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OWNER = "owner@contoso.com"
STRANGER = "stranger@contoso.com"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed (make setup installs them)",
)


@pytest.fixture(scope="module")
def delegated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(
        mailboxes=(OWNER,),
        data_dir=Path(tmp_path_factory.mktemp("delegated-stack")),
        app_settings={
            "GRAPH_AUTH_MODE": "delegated",
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
        },
    )
    with Stack(config) as running:
        running.control("POST", "/_sim/mailboxes", {"address": STRANGER})
        yield running


def spki_pin(url: str) -> str:
    """Base64 SHA-256 of the simulator's server key, as Chromium's --ignore-certificate-errors-spki-list takes it."""
    parts = urlsplit(url)
    pem = ssl.get_server_certificate((parts.hostname or "127.0.0.1", parts.port or 443))
    spki = (
        x509.load_pem_x509_certificate(pem.encode())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def browser(delegated: Stack, tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        # Trust exactly the simulator's server key, nothing else: narrower than --ignore-certificate-errors,
        # and no NSS database to import a CA into (certutil is another package).
        f"--ignore-certificate-errors-spki-list={spki_pin(delegated.sim_url)}",
    ):
        options.add_argument(flag)
    # The given driver path keeps Selenium Manager from looking for (or downloading) a driver.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


def consent_url(stack: Stack, mailbox: str, prompt: str | None = None) -> str:
    query = {"mailbox": mailbox, **({"prompt": prompt} if prompt else {})}
    return f"{stack.app_url}/api/consent?{urlencode(query)}"


def wait_for(driver: WebDriver, *css: str) -> str:
    """The first of `css` on the page, waiting for it: a click that submits a form returns before the next
    page has loaded."""
    found = WebDriverWait(driver, 30).until(
        lambda d: next((c for c in css if d.find_elements(By.CSS_SELECTOR, c)), False),
        f"none of {css} appeared; page: {driver.current_url}",
    )
    return str(found)


def consent_in_browser(driver: WebDriver, url: str, user: str) -> str:
    """Open the app's consent link, sign in as `user` and accept when asked, continue to the app; the outcome."""
    driver.get(url)
    step = wait_for(driver, "#signin-form", "#consent-form", "#continue")
    if step == "#signin-form":
        field = driver.find_element(By.ID, "username")
        field.clear()
        field.send_keys(user)
        driver.find_element(By.ID, "password").send_keys("any password")
        driver.find_element(By.ID, "signin").click()
        step = wait_for(driver, "#consent-form", "#continue")
    if step == "#consent-form":  # shown unless the user consented to these scopes before
        driver.find_element(By.ID, "accept").click()
        wait_for(driver, "#continue")
    # form_post: the authorize service answers with a form that carries the code to the app's callback.
    driver.find_element(By.ID, "continue").click()
    wait_for(driver, "#outcome")
    outcome = driver.find_element(By.ID, "outcome")
    return f"{outcome.get_attribute('data-outcome')}: {outcome.text}"


def test_consent_in_a_browser_then_the_timer_subscribes_and_mail_is_ingested(delegated: Stack, browser: WebDriver):
    unknown = httpx.get(consent_url(delegated, "nobody@contoso.com"), timeout=30)
    assert unknown.status_code == 400 and "not a configured mailbox" in unknown.text

    outcome = consent_in_browser(browser, consent_url(delegated, OWNER), OWNER)
    assert outcome.startswith("ok: The app can now read the mail of owner@contoso.com"), outcome
    assert urlsplit(browser.current_url).path == "/api/consent/callback"

    assert delegated.run_function("maintain").status_code == 200
    [sub] = subscriptions(delegated)
    assert sub["resource"].startswith(f"users/{OWNER}/mailFolders/")
    reader = BlobReader(delegated)
    try:
        mail = deliver(delegated, OWNER, "Inbox", "Consented", [
            file_attachment("consented.pdf", b"%PDF-1.4 consented", "application/pdf"),
        ])  # fmt: skip
        manifests = wait_for_manifests(reader, [mail], timeout=60)
        assert manifests[mail.message_id][0]["status"] == "complete"
    finally:
        reader.close()


def test_prompt_consent_shows_the_consent_page_again(delegated: Stack, browser: WebDriver):
    assert consent_in_browser(browser, consent_url(delegated, OWNER), OWNER).startswith("ok:")
    browser.get(consent_url(delegated, OWNER, "consent"))
    # Signed in already (the simulator's session cookie), yet asked to consent again.
    assert wait_for(browser, "#signin-form", "#consent-form") == "#consent-form"
    browser.find_element(By.ID, "accept").click()
    wait_for(browser, "#continue")
    browser.find_element(By.ID, "continue").click()
    wait_for(browser, "#outcome")
    assert browser.find_element(By.ID, "outcome").get_attribute("data-outcome") == "ok"


def test_a_wrong_user_signing_in_is_refused(delegated: Stack, browser: WebDriver):
    before = delegated.control("GET", f"/_sim/users/{OWNER}/consents")
    outcome = consent_in_browser(browser, consent_url(delegated, OWNER, "login"), STRANGER)
    assert outcome.startswith(f"refused: Signed in as {STRANGER}, but this consent is for {OWNER}"), outcome
    assert "nothing was stored" in outcome
    assert delegated.control("GET", f"/_sim/users/{OWNER}/consents") == before
