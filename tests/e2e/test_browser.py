"""
The dashboard in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against the real daemon: it lists the
connected agents, shows a message within a second of its sending, shows its
recipient's status going to acked, and renders a body holding <script> as
text.

Skipped, loudly, where chromium, chromedriver or selenium are missing;
with RELAY_REQUIRE_BROWSER=1 (CI, .ci/run) that is a failure instead.
RELAY_DASHBOARD_SCREENSHOT=PATH also saves the screenshot there (README's
docs/dashboard.png comes from this test).
"""

import os
import shutil
import time

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.support.daemon import connect_agent, send
from tests.support.web import WebDaemon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold?</b>'


def _missing():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if CHROMIUM is None:
        return "chromium is not installed (apt-get install chromium)"
    if CHROMEDRIVER is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


def start_browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--user-data-dir=" + profile):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_text(driver, css, predicate, timeout=10.0):
    """
    Poll (in a thread, through selenium's own bounded wait) until an
    element matching C{css} has text for which C{predicate(text)} holds;
    returns (text, seconds waited).
    """
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    started = time.monotonic()
    last = [None]

    def matched(driver):
        for element in driver.find_elements(By.CSS_SELECTOR, css):
            last[0] = element.text
            if predicate(last[0]):
                return (last[0],)  # truthy even for an empty text
        return False

    wait = WebDriverWait(driver, timeout, poll_frequency=0.02,
                         ignored_exceptions=(StaleElementReferenceException,))
    try:
        (text,) = wait.until(matched)
    except TimeoutException:
        raise AssertionError("%s never matched in %ss (last text %r)" % (css, timeout, last[0]))
    return text, time.monotonic() - started


class DashboardTests(unittest.TestCase):
    """
    The page, live, in Chromium.
    """

    timeout = 120

    def setUp(self):
        missing = _missing()
        if missing is not None:
            reason = "BROWSER TEST NOT RUN: " + missing
            if os.environ.get("RELAY_REQUIRE_BROWSER") == "1":
                self.fail(reason + " (RELAY_REQUIRE_BROWSER=1)")
            raise unittest.SkipTest(reason)

    @defer.inlineCallbacks
    def test_live_dashboard(self):
        """
        Chromium shows the connected agents with their HELLO info; a message
        alice sends appears within a second with bob "delivered", turns
        "acked" once bob acks, and its <script>/<img onerror> body is shown
        as text: nothing in it runs and no element is made from it.
        """
        daemon = WebDaemon(self)
        yield daemon.start()
        bob = yield connect_agent(daemon, "bob", cli="claude", model="opus-4", task="review PR 42")
        bob.auto_ack = False
        alice = yield connect_agent(daemon, "alice", cli="codex", task="write tests")
        self.addCleanup(bob.transport.loseConnection)
        self.addCleanup(alice.transport.loseConnection)
        # Some history for the page to load (and the screenshot to show).
        alice.send_many([send("bob", "earlier message %d" % i, requires_ack=True, thread="pr-41")
                         for i in range(3)])
        yield alice.wait_type("ACK", 3)

        driver = yield threads.deferToThread(start_browser, os.path.abspath(self.mktemp()))
        self.addCleanup(threads.deferToThread, driver.quit)
        yield threads.deferToThread(driver.get, daemon.url + "/")
        text, _ = yield threads.deferToThread(wait_text, driver, "#agents tr[data-agent=bob]",
                                              lambda t: "opus-4" in t)
        self.assertIn("review PR 42", text)
        yield threads.deferToThread(wait_text, driver, "#agents tr[data-agent=alice]",
                                    lambda t: "codex" in t)
        yield threads.deferToThread(wait_text, driver, "#live", lambda t: t == "live")

        sent_at = time.monotonic()
        alice.send(send("bob", HOSTILE, requires_ack=True, thread="pr-42"))
        _, waited = yield threads.deferToThread(
            wait_text, driver, ".thread[data-thread=pr-42] .msg .body", lambda t: t == HOSTILE)
        shown_after = time.monotonic() - sent_at
        self.assertLess(shown_after, 1.0, "the message took %.2fs to show" % (shown_after,))
        yield bob.wait_for(lambda a: any(f["payload"].get("body") == HOSTILE
                                         for f in a.of_type("DELIVER")))
        yield threads.deferToThread(wait_text, driver,
                                    ".thread[data-thread=pr-42] [data-recipient=bob]",
                                    lambda t: t == "bob: delivered")
        deliver = [f for f in bob.of_type("DELIVER") if f["payload"].get("body") == HOSTILE][0]
        bob.send({"v": 1, "type": "ACK", "id": "a1",
                  "payload": {"ack_id": deliver["id"], "seq": deliver["delivery"]["seq"]}})
        yield threads.deferToThread(wait_text, driver,
                                    ".thread[data-thread=pr-42] [data-recipient=bob]",
                                    lambda t: t == "bob: acked")

        pwned = yield threads.deferToThread(driver.execute_script, "return window.pwned")
        self.assertIsNone(pwned)
        made = yield threads.deferToThread(
            driver.execute_script,
            "return document.querySelectorAll('.msg .body *').length")
        self.assertEqual(made, 0)
        title = yield threads.deferToThread(lambda: driver.title)
        self.assertEqual(title, "relay")

        # The dashboard reloaded from the store agrees (history + statuses).
        yield threads.deferToThread(driver.refresh)
        yield threads.deferToThread(wait_text, driver,
                                    ".thread[data-thread=pr-42] [data-recipient=bob]",
                                    lambda t: t == "bob: acked")
        logs = yield threads.deferToThread(driver.get_log, "browser")
        self.assertEqual([e for e in logs if e["level"] == "SEVERE"], [])
        shot = os.path.abspath(self.mktemp()) + ".png"
        yield threads.deferToThread(driver.save_screenshot, shot)
        self.assertGreater(os.path.getsize(shot), 10000)
        target = os.environ.get("RELAY_DASHBOARD_SCREENSHOT")
        if target:
            shutil.copyfile(shot, target)
