"""The operator dashboard in headless Chromium (Debian's, through Playwright): it asks for
an admin key, then renders its charts (uPlot, vendored) and tables from live data, with no
console error; a screenshot goes to the test's output folder."""

from __future__ import annotations

import pytest

from tests.service.conftest import ADMIN, READ, WRITE, start
from tests.service.test_web_page import CHROMIUM, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"
)


@pytest.mark.slow
def test_the_dashboard_renders_live_data(browser, fresh_ws, tmp_path):  # noqa: F811
    srv = start(fresh_ws)
    try:
        admin = srv.client(ADMIN)
        body = {"variants": [{"name": "control", "share": 0.5}, {"name": "same", "share": 0.5}],
                "guardrails": [{"metric": "completion", "max_loss": 0.02}]}  # fmt: skip
        assert admin.put("/v1/admin/experiments/aa", json=body).status_code == 200
        for u in range(12):
            r = srv.client(READ).get(f"/v1/users/u{u}/recommendations", params={"k": 5})
            first = r.json()["items"][0]["item_id"]
            if u % 2 == 0:
                ev = {"user_id": f"u{u}", "item_id": first, "event": "play", "value": 1.0,
                      "request_id": r.headers["x-request-id"]}  # fmt: skip
                assert srv.client(WRITE).post("/v1/events", json=ev).status_code == 200
        assert srv.client().get("/admin/assets/secret.txt").status_code == 404
        assert srv.client(READ).get("/v1/admin/overview").status_code == 403

        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{srv.url}/admin")
        page.fill("#key", READ)  # not an admin's
        page.click("#load")
        page.wait_for_function("document.getElementById('status').className === 'error'")
        assert "admin key" in page.text_content("#status")
        errors.clear()  # the refused fetch's 403 is logged by the browser itself
        page.fill("#key", ADMIN)
        page.click("#load")
        page.wait_for_function("document.body.dataset.loaded")
        assert page.eval_on_selector_all("#ctr canvas, #shown canvas", "els => els.length") >= 2
        legend = page.text_content("#ctr")
        assert "aa:control" in legend and "aa:same" in legend
        online = page.eval_on_selector_all("#online tr", "els => els.map(e => e.textContent)")
        assert any("recommendations" in row for row in online[1:])
        exps = page.text_content("#experiments")
        assert "control (control)" in exps and "same" in exps
        assert "completion: loss" in exps  # the treatment arm's guardrail, in its row
        assert "v1" in page.text_content("#models")
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"dashboard screenshot: {shot}")
        assert shot.stat().st_size > 20_000
        assert errors == [], errors
    finally:
        srv.stop()
