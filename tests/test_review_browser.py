"""The review page in a real browser: Playwright drives Debian's chromium (never a downloaded
one) against `leukedge serve --review` on a free loopback port.

Skips, saying why, where Playwright or a Chromium is missing (.ci/run installs Debian's
``chromium``). Set ``LEUKEDGE_REVIEW_SCREENSHOTS`` to a folder to keep the page's screenshots
(docs/img/review-*.png were taken so: the tiny test model on the bundled sample smears).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="leukedge serve needs the [serve] extra")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright (the [dev] extra)")

from review_helpers import infer_results  # noqa: E402

HOST = "127.0.0.1"
CHROMIUM = next((p for p in (os.environ.get("LEUKEDGE_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
pytestmark = [pytest.mark.slow,  # a browser and a server start: ~25 s here
              pytest.mark.skipif(CHROMIUM is None,
                                 reason="no Chromium here (Debian: apt-get install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.request("GET", path)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, data


@pytest.fixture(scope="module")
def served(tiny_model_path, sample_images, tmp_path_factory):
    """(port, results file, audit file) of a running `leukedge serve --review` (one per
    module: starting it costs seconds; each test counts on no decision of the others)."""
    tmp_path = tmp_path_factory.mktemp("browser")
    images = []
    for path in sample_images[::2]:  # one real smear per class
        images.append(tmp_path / "smears" / path.name)
        images[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(path, images[-1])
    model = str(tiny_model_path)
    results = infer_results(model, images, tmp_path / "results.jsonl")
    port, log = _free_port(), tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "leukedge.cli", "serve", "--port",
                                 str(port), "--model", model, "--review", str(results)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("the server did not start: " + log.read_text()[-800:])
            time.sleep(0.2)
        yield port, results, Path(f"{results}.audit.jsonl")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def shoot(page, name: str) -> None:
    folder = os.environ.get("LEUKEDGE_REVIEW_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name))


def image_shown(page) -> bool:
    return page.eval_on_selector("#image", "i => i.complete && i.naturalWidth > 0")


def wait_items(page, count: int) -> None:
    sync_api.expect(page.locator("#items li")).to_have_count(count)


def test_a_reviewer_works_the_queue_by_keyboard_and_by_click(served, browser):
    port, results, audit = served
    assert json.loads(_get(port, "/v1/review/queue")[1])["decided"] == 0
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.goto(f"http://{HOST}:{port}/review")
    page.fill("#name", "Dr. Test")
    page.click("#start")
    wait_items(page, 4)
    page.wait_for_function("() => document.querySelector('#image').naturalWidth > 0")
    assert image_shown(page)
    queue = json.loads(_get(port, "/v1/review/queue")[1])
    first, second, third = queue["items"][:3]
    shown = f"{int(first['confidence'] * 1000) / 1000:.3f}"  # cut, never rounded up
    assert page.inner_text("#prediction") == f"Predicted: {first['label']} {shown}"
    page.click("#views button:has-text('Stain outline')")
    page.wait_for_function(
        "() => document.querySelector('#image').src.endsWith('view=overlay')")
    page.wait_for_function("() => document.querySelector('#image').naturalWidth > 0")
    shoot(page, "review-queue.png")

    page.keyboard.press("ArrowDown")  # to the second item; then 4 = the fourth class
    assert page.get_attribute("#items li:nth-child(2)", "aria-current") == "true"
    page.keyboard.press("4")
    wait_items(page, 3)
    page.click("#choices button[data-label='Early']")  # now on the third item
    wait_items(page, 2)
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")  # accepts the first item's predicted label
    wait_items(page, 1)
    sync_api.expect(page.locator("#status")).to_contain_text("recorded")
    shoot(page, "review-decided.png")

    page.reload()  # the name stays for the session; decisions stay on the server
    wait_items(page, 1)
    assert page.is_hidden("#login") and page.inner_text("#who") == "Dr. Test"
    remaining = page.get_attribute("#items li", "title")
    assert remaining not in (first["path"], second["path"], third["path"])
    assert problems == []

    records = [json.loads(line) for line in audit.read_text().splitlines()][-3:]
    assert [(r["path"], r["label"]) for r in records] == [
        (second["path"], queue["classes"][3]), (third["path"], "Early"),
        (first["path"], first["label"])]
    assert {r["reviewer"] for r in records} == {"Dr. Test"}
    verify = subprocess.run([sys.executable, "-m", "leukedge.cli", "review", "verify",
                             str(audit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "chain intact" in verify.stdout


EVIL = """<!doctype html><html><body>
<form id="f" method="post" action="{url}" enctype="text/plain">
<input type="hidden" name='{name}' value='"}}'><button id="go">win a prize</button></form>
</body></html>"""


def test_a_page_from_another_origin_cannot_post_decisions(served, browser, tmp_path):
    from functools import partial
    from html import escape
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    port, results, audit = served
    url = f"http://{HOST}:{port}/v1/review/decision"
    before = audit.read_bytes() if audit.exists() else b""
    path = json.loads(_get(port, "/v1/review/queue")[1])["items"][0]["path"]
    name = escape(json.dumps({"path": path, "label": "Pro", "reviewer": "evil"})[:-1]
                  + ', "pad": "', quote=True)  # the text/plain form body is valid JSON
    site = tmp_path / "evil"
    site.mkdir()
    (site / "index.html").write_text(EVIL.format(url=url, name=name))
    evil = ThreadingHTTPServer((HOST, 0), partial(SimpleHTTPRequestHandler, directory=site))
    Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://{HOST}:{evil.server_address[1]}/index.html")
        kind = page.evaluate("""async ([url, body]) => {
            const r = await fetch(url, {method: "POST", mode: "no-cors", body: body,
                                        headers: {"Content-Type": "text/plain"}});
            return r.type; }""", [url, json.dumps({"path": path, "label": "Pro",
                                                   "reviewer": "evil"})])
        assert kind == "opaque"  # sent, answer unreadable; the server refused it (below)
        page.click("#go")  # the classic cross-site form post, as a navigation
        page.wait_for_load_state()
        assert "cross-origin request refused" in page.content()
    finally:
        evil.shutdown()
    assert (audit.read_bytes() if audit.exists() else b"") == before
    assert path in [i["path"] for i in json.loads(_get(port, "/v1/review/queue")[1])["items"]]
