"""Two browser pages use the chat page (examples/chat/www) against a real wshost.

Driven by tests/browser_chat.rs, which runs the server and does what a browser cannot:
hot-reloading the controller and restarting the server. The two sides speak in lines:
this script prints `step NAME` on stdout and waits for `done` on stdin before going on
(`reload`: the controller file was replaced and reloaded; `kill`: the server is gone;
`start`: a new server listens on the same port). It prints `ok` at the end; any failure
raises (non-zero exit, traceback on stderr).

Usage: chat.py BASE_URL CHROMIUM SCREENSHOT_DIR
"""

import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

# Every Playwright wait is bounded by this (milliseconds). A healthy run takes well
# under a second per step; reconnecting after a restart waits for the backoff (at most
# 8 s between tries).
TIMEOUT_MS = 30_000

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def step(name):
    """Asks the Rust side to do `name` and waits until it is done."""
    print(f"step {name}", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "done":
        raise RuntimeError(f"step {name}: expected `done`, got {answer!r}")


def stats(page):
    return page.evaluate("() => ({ ...window.chatStats })")


def join(context, base, name, room):
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base + "/")
    page.fill("#name", name)
    page.fill("#room", room)
    page.click("#join button")
    expect(page.locator("#status")).to_have_attribute("data-state", "online")
    expect(page.locator("#join")).to_be_hidden()
    return page


def say(page, text):
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#log li.mine").last).to_have_text(text)


def heard(page, who, text):
    line = page.locator("#log li.theirs").filter(has_text=text).last
    expect(line).to_be_visible()
    expect(line.locator(".who")).to_have_text(who)


def event(page, text):
    expect(page.locator("#log li.event").filter(has_text=text).last).to_be_visible()


def online(page, n):
    expect(page.locator("#online")).to_have_text(f"{n} online")


def main():
    base, chromium, shots = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        # A phone-sized window: the page must work there.
        phone = {"viewport": {"width": 390, "height": 700}, "device_scale_factor": 2}
        ada_context = browser.new_context(**phone)
        bob_context = browser.new_context(**phone)

        ada = join(ada_context, base, "ada", "lobby")
        event(ada, "you joined as ada")
        online(ada, 1)
        bob = join(bob_context, base, "bob", "lobby")
        event(bob, "you joined as bob")
        online(bob, 2)
        event(ada, "bob joined")
        online(ada, 2)

        say(ada, "hello from ada")
        heard(bob, "ada", "hello from ada")
        say(bob, "hi ada, bob here")
        heard(ada, "bob", "hi ada, bob here")
        ada.screenshot(path=str(shots / "chat-ada.png"))
        bob.screenshot(path=str(shots / "chat-bob.png"))

        # A hot reload of the controller keeps every connection open.
        step("reload")
        say(ada, "after the reload")
        heard(bob, "ada", "after the reload")
        say(bob, "still here")
        heard(ada, "bob", "still here")
        for page in (ada, bob):
            got = stats(page)
            assert got["opens"] == 1 and got["closes"] == 0, f"reconnected: {got}"

        # A restart: the pages notice, show it, and reconnect on their own.
        step("kill")
        for page in (ada, bob):
            expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
            expect(page.locator("#online")).to_be_hidden()
        ada.screenshot(path=str(shots / "chat-offline.png"))
        step("start")
        for page in (ada, bob):
            expect(page.locator("#status")).to_have_attribute("data-state", "online")
            page.wait_for_function("() => window.chatStats.opens === 2")
        # Whoever came back second saw two online; both see each other again.
        say(ada, "after the restart")
        heard(bob, "ada", "after the restart")
        say(bob, "welcome back")
        heard(ada, "bob", "welcome back")
        for page in (ada, bob):
            got = stats(page)
            assert got["opens"] == 2 and got["closes"] == 1, f"unexpected: {got}"

        # Leaving is announced and counted.
        online(ada, 2)
        bob_context.close()
        event(ada, "bob left")
        online(ada, 1)
        ada.screenshot(path=str(shots / "chat-after-leave.png"))
        browser.close()
    print("ok", flush=True)


if __name__ == "__main__":
    main()
