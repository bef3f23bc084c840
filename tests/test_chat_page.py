"""The sandbox's chat page: its routes and event stream, then a real browser against the bot.

The browser is headless Chromium from Debian (`make setup` installs it as root) driven by
Playwright; `playwright install` is never needed. The bot runs as `python -m bot` in its own
process, exactly as in test_bot.py, and the page is the only thing playing the user.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the route tests still run; the browser tests are skipped
    expect = sync_playwright = None  # type: ignore[assignment]

from sandbox import Sandbox, SandboxThread
from sandbox.page import STATIC_FILES
from tests import images
from tests.botharness import FAKE_TOKEN, REPO, RunningBot, start_bot

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 740}
SCREENSHOT = REPO / "test-artifacts" / "chat-page.png"
#: How long to wait for the bot's answer in the browser: generous for a loaded 2-core machine.
ANSWER_MS = 90_000
#: How long to wait for things the page does without the bot.
UI_MS = 15_000
USER = 1001
ADMIN = 4242
STATIC = REPO / "sandbox" / "static"


# ------------------------------------------------------------- routes, no browser


@pytest.fixture
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread(FAKE_TOKEN, page_admin_id=ADMIN) as thread:
        yield thread


@pytest.fixture
def http(sandbox: SandboxThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=30) as client:
        yield client


def read_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    """Read `count` Server-Sent Events (comments included, as {"comment": ...})."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            events.append({"comment": line[1:].strip()})
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            events.append(fields)
            fields = {}
        if len(events) >= count:
            break
    return events


def test_the_page_is_served_with_its_files(http: httpx.Client) -> None:
    """/ is the page; its script, styles and icon are under /static; nothing else is."""
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'src="/static/app.js"' in page.text
    for name, content_type in STATIC_FILES.items():
        response = http.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(content_type)
    for path in ("/static/nope.js", "/static/..%2Fserver.py", "/static/%2e%2e/page.py"):
        assert http.get(path).status_code == 404, path


def test_the_page_fetches_nothing_from_the_internet() -> None:
    """No CDN: the page's files name no other host (and its CSP would block one)."""
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.IGNORECASE)
        # SVG's xmlns names a namespace; nothing is fetched from it.
        assert [url for url in urls if url != "http://www.w3.org"] == [], path.name


def test_info_names_the_page_identities(http: httpx.Client) -> None:
    info = http.get("/_sandbox/info").json()
    assert info["page_user_id"] == USER
    assert info["page_admin_id"] == ADMIN
    with SandboxThread(FAKE_TOKEN) as plain:
        assert httpx.get(f"{plain.url}/_sandbox/info").json()["page_admin_id"] is None
    with pytest.raises(ValueError, match="page_admin_id"):
        Sandbox(FAKE_TOKEN, page_admin_id=0)


def test_stream_sends_a_chats_events_and_resumes(http: httpx.Client) -> None:
    """The stream replays events after `since`, for one chat, and resumes at Last-Event-ID."""
    http.post("/_sandbox/send", data={"text": "other chat", "user_id": "7"})
    http.post("/_sandbox/send", data={"text": "first"})
    http.post("/_sandbox/send", data={"text": "second"})
    history = http.get(f"/_sandbox/chats/{USER}/messages").json()
    assert [m["text"] for m in history["messages"]] == ["first", "second"]
    seq = history["seq"]

    with http.stream("GET", "/_sandbox/stream", params={"chat_id": USER}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        retry, first, second = read_events(response, 3)
    assert retry == {"retry": "2000"}
    assert [json.loads(e["data"])["message"]["text"] for e in (first, second)] == [
        "first",
        "second",
    ]
    assert second["id"].endswith(f"-{seq}")

    headers = {"Last-Event-ID": first["id"]}
    with http.stream(
        "GET", "/_sandbox/stream", params={"chat_id": USER, "since": 0}, headers=headers
    ) as response:
        _, resumed = read_events(response, 2)
    assert json.loads(resumed["data"])["message"]["text"] == "second"


def test_stream_waits_with_heartbeats_then_delivers(sandbox: SandboxThread) -> None:
    """An idle stream sends comments; a new message arrives at once; a reset says reload."""
    with (
        httpx.Client(base_url=sandbox.url, timeout=30) as http,
        httpx.Client(base_url=sandbox.url, timeout=30) as other,
        http.stream(
            "GET", "/_sandbox/stream", params={"chat_id": USER, "heartbeat": 0.1}
        ) as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"
        assert next(lines) == ""
        assert next(lines) == ": heartbeat"
        other.post("/_sandbox/send", data={"text": "hello"})
        event = next(line for line in lines if line.startswith("data:"))
        assert json.loads(event.removeprefix("data: "))["message"]["text"] == "hello"
        other.post("/_sandbox/reset")
        assert next(line for line in lines if line.startswith("event:")) == "event: reset"


@pytest.mark.parametrize("last_event_id", ["0badcafe-1", "999"])
def test_a_restarted_sandbox_tells_the_page_to_reload(
    http: httpx.Client, last_event_id: str
) -> None:
    """An event id of an earlier sandbox run (or beyond the log) gets a reset, not silence."""
    http.post("/_sandbox/send", data={"text": "new run"})
    headers = {"Last-Event-ID": last_event_id}
    with http.stream(
        "GET", "/_sandbox/stream", params={"chat_id": USER, "heartbeat": 0.1}, headers=headers
    ) as response:
        _, reset, after = read_events(response, 3)
    assert reset["event"] == "reset"
    assert json.loads(reset["data"]) == {"seq": 1}
    assert after == {"comment": "heartbeat"}  # it goes on after the reload, replaying nothing


def test_files_are_never_run_as_pages(http: httpx.Client) -> None:
    """A user's "document" is served sandboxed, so an HTML file cannot act as the page."""
    sent = http.post(
        "/_sandbox/send",
        files={"document": ("x.html", b"<script>alert(1)</script>", "text/html")},
    ).json()
    file_id = sent["message"]["document"]["file_id"]
    response = http.get(f"/_sandbox/files/{file_id}")
    assert response.headers["content-security-policy"].startswith("sandbox")
    assert response.headers["x-content-type-options"] == "nosniff"


# ------------------------------------------------------------------- the browser

# Skipped only on a developer's machine without the browser; in CI a missing browser fails.
needs_chromium = pytest.mark.skipif(
    (sync_playwright is None or not CHROMIUM.exists()) and not os.environ.get("CI"),
    reason="needs Playwright (the test extra) and /usr/bin/chromium (`make setup`, as root)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Chromium (Debian's, not Playwright's) in a phone-sized viewport, fresh profile."""
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        context.set_default_timeout(UI_MS)
        expect.set_options(timeout=UI_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    running = start_bot(tmp_path_factory.mktemp("chat-page-bot"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A new tab; afterwards, checks it had no script errors and asked no other host."""
    tab = browser.new_page()
    requests: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: (
            errors.append(message.text)
            # The page asks for a chat's history before the chat exists: a 404 it expects.
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    yield tab
    tab.close()
    assert errors == []
    origin = re.compile(r"(http://127\.0\.0\.1:\d+/|blob:http://127\.0\.0\.1:\d+/|data:)")
    assert [url for url in requests if not origin.match(url)] == []


def open_chat(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-ready='true']")


def bot_api(url: str, method: str, **params: Any) -> Any:
    """Call the sandbox's Bot API as the bot would (the sandbox cannot tell the difference)."""
    response = httpx.post(f"{url}/bot{FAKE_TOKEN}/{method}", json=params, timeout=30)
    body = response.json()
    assert body["ok"], body
    return body["result"]


KEYBOARD = {
    "inline_keyboard": [
        [
            {"text": "✅ Right", "callback_data": "chat-page:right"},
            {"text": "❌ Wrong", "callback_data": "chat-page:wrong"},
        ]
    ]
}


def press_from_the_keyboard(page: Page, message_id: int, name: str) -> Any:
    """Tab-free keyboard use: focus a bot message's button, press Enter; the press's answer."""
    button = page.locator(f".msg[data-message-id='{message_id}']").get_by_role("button", name=name)
    expect(button).to_be_visible()
    with page.expect_response("**/_sandbox/press") as pressed:
        button.focus()
        page.keyboard.press("Enter")
    answer = pressed.value.json()
    assert answer["ok"], answer
    return answer


@needs_chromium
def test_help_typed_in_the_page_is_answered(bot: RunningBot, page: Page) -> None:
    """Typing /help and pressing Enter sends it; the bot's help appears in a bubble."""
    open_chat(page, bot.url)
    expect(page.locator("#status")).to_have_text("bot")
    page.get_by_role("textbox", name="Message").fill("/help")
    page.get_by_role("textbox", name="Message").press("Enter")
    expect(page.locator(".msg.out:not(.pending) .text")).to_contain_text("/help")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("")
    answer = page.locator(".msg.in .text").filter(has_text="Send me a photo")
    expect(answer).to_be_visible(timeout=ANSWER_MS)


@needs_chromium
def test_a_photo_from_the_page_is_answered_under_it(
    bot: RunningBot, page: Page, tmp_path: Path
) -> None:
    """coffee() picked in the page comes back as a bubble quoting it: 'espresso — NN%'."""
    photo = tmp_path / "coffee.jpg"
    images.coffee().save(photo, "JPEG", quality=92)
    open_chat(page, bot.url)
    page.set_input_files("#pick", photo)

    answer = page.locator(".msg.in").filter(has_text=re.compile(r"espresso — \d+%"))
    expect(answer).to_be_visible(timeout=ANSWER_MS)
    expect(answer.locator(".quote img")).to_have_count(1)  # it quotes the photo
    sent = page.locator(".msg.out img.photo")
    expect(sent).to_have_count(1)
    assert (sent.get_attribute("src") or "").startswith("/_sandbox/files/")
    assert sent.get_attribute("loading") == "lazy"
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    box = sent.bounding_box()
    assert box is not None
    assert box["width"] <= PHONE["width"]

    # Wrong → pick the runner-up → the bubble shows the recorded correction.
    answer.get_by_role("button", name="❌ Wrong").click()
    asking = page.locator(".msg.in").filter(has_text="What is it?")
    expect(asking).to_be_visible(timeout=ANSWER_MS)
    candidate = asking.locator(".keyboard button").first
    label = (candidate.inner_text() or "").rsplit(" (", 1)[0]
    candidate.click()
    recorded = page.locator(".msg.in").filter(has_text=f"Corrected to: {label}")
    expect(recorded).to_be_visible(timeout=ANSWER_MS)
    expect(recorded.locator(".keyboard button")).to_have_count(0)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))


@needs_chromium
def test_an_inline_button_press_reaches_the_bot(bot: RunningBot, page: Page) -> None:
    """A button rendered from a bot message's inline keyboard becomes a callback query."""
    bot.send(text="/help", wait=30)  # the chat exists before the bot writes to it
    open_chat(page, bot.url)
    sent = bot_api(
        bot.url, "sendMessage", chat_id=USER, text="Was I right?", reply_markup=KEYBOARD
    )
    answer = press_from_the_keyboard(page, sent["message_id"], "✅ Right")

    query = bot.sandbox.sandbox.state.callbacks[answer["callback_query_id"]]
    assert (query.data, query.message_id, query.user["id"]) == (
        "chat-page:right",
        sent["message_id"],
        USER,
    )
    # The bot took the update: a later getUpdates confirmed it with a higher offset.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        offsets = [int(c["params"].get("offset") or 0) for c in bot.calls("getUpdates")]
        if max(offsets) > answer["update_id"]:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the bot never fetched the callback query")


@needs_chromium
def test_answers_edits_and_typing_show_live(sandbox: SandboxThread, page: Page) -> None:
    """The bot's button answer pops up, its edit replaces the bubble, typing… shows."""
    url = sandbox.url
    httpx.post(f"{url}/_sandbox/send", data={"text": "hi"})
    open_chat(page, url)
    sent = bot_api(url, "sendMessage", chat_id=USER, text="Was I right?", reply_markup=KEYBOARD)
    answer = press_from_the_keyboard(page, sent["message_id"], "❌ Wrong")
    row = page.locator(f".msg[data-message-id='{sent['message_id']}']")

    bot_api(
        url, "answerCallbackQuery", callback_query_id=answer["callback_query_id"], text="Noted"
    )
    expect(page.locator("#toast")).to_have_text("Noted")
    bot_api(url, "editMessageText", chat_id=USER, message_id=sent["message_id"], text="Thanks!")
    expect(row.locator(".text")).to_contain_text("Thanks!")
    expect(row.locator(".edited")).to_be_visible()
    expect(row.get_by_role("button")).to_have_count(0)
    expect(row).to_have_count(1)

    expect(page.locator("#status")).to_have_text("bot")
    bot_api(url, "sendChatAction", chat_id=USER, action="typing")
    expect(page.locator("#status")).to_have_text("typing…")
    bot_api(url, "sendMessage", chat_id=USER, text="Done")
    expect(page.locator("#status")).to_have_text("bot")


@needs_chromium
def test_without_admin_ids_the_admin_switch_is_off(bot: RunningBot, page: Page) -> None:
    open_chat(page, bot.url)
    expect(page.locator("#as-admin")).to_be_disabled()
    expect(page.locator("#admin-switch")).to_have_attribute("title", re.compile("ADMIN_IDS"))


@needs_chromium
def test_the_admin_switch_uses_the_admins_own_chat(sandbox: SandboxThread, page: Page) -> None:
    """Switched to admin, commands come from the admin's id, in the admin's private chat."""
    open_chat(page, sandbox.url)
    page.get_by_role("switch", name="Admin").check()
    expect(page.locator("#identity")).to_contain_text(str(ADMIN))
    page.get_by_role("textbox", name="Message").fill("/stats")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg.out:not(.pending) .text")).to_contain_text("/stats")
    messages = httpx.get(f"{sandbox.url}/_sandbox/chats/{ADMIN}/messages").json()["messages"]
    assert [(m["from"]["id"], m["chat"]["id"], m["text"]) for m in messages] == [
        (ADMIN, ADMIN, "/stats")
    ]

    page.get_by_role("switch", name="Admin").uncheck()
    expect(page.locator("#identity")).to_contain_text(str(USER))
    expect(page.locator(".msg")).to_have_count(0)


#: Drags a small generated JPEG over the chat: `page.evaluate(DRAG, "dragenter" or "drop")`.
DRAG = """async (type) => {
  const canvas = document.createElement("canvas");
  canvas.width = 64;
  canvas.height = 48;
  canvas.getContext("2d").fillRect(8, 8, 32, 24);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg"));
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], "dropped.jpg", { type: "image/jpeg" }));
  const init = { bubbles: true, cancelable: true, dataTransfer: transfer };
  document.getElementById("messages").dispatchEvent(new DragEvent(type, init));
}"""


@needs_chromium
def test_several_photos_become_several_messages_and_files_stay_files(
    sandbox: SandboxThread, page: Page
) -> None:
    """Two photos are two messages; with the toggle on an image goes as a file; drops work."""
    open_chat(page, sandbox.url)
    jpeg = images.coffee_jpeg()
    page.set_input_files(
        "#pick",
        [
            {"name": "one.jpg", "mimeType": "image/jpeg", "buffer": jpeg},
            {"name": "two.jpg", "mimeType": "image/jpeg", "buffer": jpeg},
        ],
    )
    expect(page.locator(".msg.out:not(.pending) img.photo")).to_have_count(2)
    page.get_by_role("switch", name="Photos as files").check()
    page.set_input_files("#pick", {"name": "three.jpg", "mimeType": "image/jpeg", "buffer": jpeg})
    expect(page.locator(".msg.out:not(.pending) .file .name")).to_have_text("three.jpg")
    page.get_by_role("switch", name="Photos as files").uncheck()

    # Dropped on the chat: the overlay shows while dragging, and the photo is sent.
    page.evaluate(DRAG, "dragenter")
    expect(page.locator("#drop")).to_be_visible()
    page.evaluate(DRAG, "drop")
    expect(page.locator("#drop")).to_be_hidden()
    expect(page.locator(".msg.out:not(.pending) img.photo")).to_have_count(3)
    messages = httpx.get(f"{sandbox.url}/_sandbox/chats/{USER}/messages").json()["messages"]
    assert ["photo" in m for m in messages] == [True, True, False, True]
    assert messages[2]["document"]["file_name"] == "three.jpg"


@needs_chromium
def test_a_refused_file_gets_an_error_bubble(sandbox: SandboxThread, page: Page) -> None:
    open_chat(page, sandbox.url)
    page.set_input_files(
        "#pick", {"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"not a jpeg"}
    )
    error = page.locator(".msg.error")
    expect(error).to_contain_text("broken.jpg was not sent: not an image")
    expect(page.locator(".msg.pending")).to_have_count(0)
