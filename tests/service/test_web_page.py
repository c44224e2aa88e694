"""The web page in headless Chromium (Debian's, driven by Playwright), signed in with a user
token (as a platform's login hands it over, in the address' fragment): cards render with
titles and explanations, a like posts an event and the list visibly changes, a request in
words fills the cards, and a token that is not valid says so."""

from __future__ import annotations

import shutil

import pytest

from tests.service.conftest import ADMIN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"
)


def token_for(server, user: str) -> str:
    r = server.client(ADMIN).post("/v1/tokens", json={"user_id": user, "ttl_s": 600})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield browser
        browser.close()


def open_page(browser, server, token: str):
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    pg.goto(f"{server.url}/#token={token}")
    return pg


def _cards(page) -> list[str]:
    return page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.item)")


def test_cards_render_and_a_like_updates_the_list(browser, server, tmp_path):
    page = open_page(browser, server, token_for(server, "web-visitor"))
    assert "token=" not in page.url  # the token leaves the address bar (and history)
    assert page.input_value("#user") == "web-visitor"
    page.click("#go")
    page.wait_for_function("document.querySelectorAll('.card').length >= 6")
    assert "nothing known of you yet" in page.text_content("#status")
    first = _cards(page)
    titles = page.eval_on_selector_all(".card .title", "els => els.map(e => e.textContent)")
    assert all(t.startswith("Song ") for t in titles)
    shot = tmp_path / "cards.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    # cards are drawn: their white bodies and gradient covers, not an empty page
    colours = img.resize((120, 90)).getcolors(120 * 90)
    assert img.size[0] == 1200 and len(colours) > 20

    liked = first[0]
    page.click(f".card[data-item='{liked}'] button[data-event='like']")
    page.wait_for_function(
        f"!Array.from(document.querySelectorAll('.card')).some(e => e.dataset.item === '{liked}')"
    )
    assert "like recorded" in page.text_content("#status")
    assert "nothing known of you yet" not in page.text_content("#status")
    assert _cards(page) != first
    events = server.client(ADMIN).get("/v1/users/web-visitor/events").json()["events"]
    assert [e["item_id"] for e in events if e["event"] == "like"] == [liked]
    why = page.eval_on_selector_all(".card .why", "els => els.map(e => e.textContent)")
    assert any(w for w in why)


def test_asking_in_words_fills_the_cards(browser, server):
    page = open_page(browser, server, token_for(server, "web-asker"))
    page.fill("#ask", "rock songs under 20 minutes")
    page.click("#askbtn")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('asked')")
    assert "max_duration=1200" in page.text_content("#status")
    ids = _cards(page)
    assert ids and all(12 <= int(i[1:]) < 20 for i in ids)


def test_a_token_that_is_not_valid_says_so(browser, server):
    good = token_for(server, "web-visitor")
    head, body, sig = good.split(".")
    forged = ".".join((head, body, sig[::-1]))  # the signature no longer matches
    page = open_page(browser, server, forged)
    page.wait_for_function("document.querySelector('#status').className === 'error'")
    assert "sign in again" in page.text_content("#status")
