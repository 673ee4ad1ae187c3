"""`leukedge serve --review`'s routes in process: the queue, images by id only, decisions written
once to the audit, the 4xx answers, the cross-origin rules and the page's policy."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="leukedge serve needs the [serve] extra")

from leukedge.runtime import Classifier  # noqa: E402
from leukedge.runtime.http_api import create_app  # noqa: E402
from leukedge.runtime.review_station import ReviewStation  # noqa: E402
from review_helpers import PORT, call, decide, infer_results, make_images  # noqa: E402


@pytest.fixture(scope="module")
def classifier(tiny_model_path):
    return Classifier(tiny_model_path, provider="cpu")


@pytest.fixture(scope="module")
def results(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("station")
    images = make_images(folder / "imgs", 6)
    return infer_results(tiny_model_path, images, folder / "results.jsonl")


@pytest.fixture
def open_station(classifier, tmp_path):
    opened = []

    def station(results_file, audit=None):
        s = ReviewStation(classifier, results_file, audit or tmp_path / "audit.jsonl")
        opened.append(s)
        return create_app(classifier, port=PORT, review=s), s
    yield station
    for s in opened:
        s.close()


@pytest.fixture
def app(open_station, results):
    return open_station(results)[0]


def queue(app) -> dict:
    status, body, _ = call(app, "GET", "/v1/review/queue")
    assert status == 200
    return body


def test_the_queue_is_the_flagged_rows_lowest_confidence_first(app, results):
    q = queue(app)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert q["rows"] == q["flagged"] == len(rows) == len(q["items"]) and q["decided"] == 0
    confidences = [i["confidence"] for i in q["items"]]
    assert confidences == sorted(confidences) and len(set(confidences)) > 1
    first = q["items"][0]
    row = next(r for r in rows if r["path"] == first["path"])
    assert first["probabilities"] == row["probabilities"] and first["label"] == row["label"]
    assert [t["label"] for t in first["top2"]] == sorted(
        row["probabilities"], key=row["probabilities"].get, reverse=True)[:2]
    assert first["reasons"] == row["review_reasons"] and first["input_checks"]
    assert first["views"] == ["image", "overlay"] and q["classes"] == ["Benign", "Early", "Pre",
                                                                       "Pro"]
    assert set(q["limits"]) == {"min_contrast", "min_stain_coverage", "max_ood_score"}


def test_images_are_served_by_id_only(app, results):
    item = queue(app)["items"][0]
    for view in ("image", "overlay"):
        status, data, headers = call(app, "GET", f"/v1/review/image/{item['id']}",
                                     query=f"view={view}")
        assert status == 200 and headers["content-type"] == "image/jpeg"
        assert headers["cross-origin-resource-policy"] == "same-origin"
        picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (48, 64, 3)
    assert call(app, "GET", f"/v1/review/image/{item['id']}", query="view=heat")[0] == 404
    for probe in ("0" * 20, item["path"], "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        status, body, _ = call(app, "GET", f"/v1/review/image/{probe}")
        assert status == 404 and "error" in body


def test_a_decision_is_written_once_and_survives_a_restart(open_station, results, tmp_path):
    app, station = open_station(results, tmp_path / "a.jsonl")
    item = queue(app)["items"][0]
    status, record, _ = decide(app, item["path"], "Pro", "  Dr. A  ")
    assert status == 200 and record["line"] == 1
    digest = hashlib.sha256(open(record["file"], "rb").read()).hexdigest()
    assert {k: record[k] for k in ("path", "sha256", "predicted", "confidence", "label",
                                   "reviewer", "model", "replaces")} == {
        "path": item["path"], "sha256": digest, "predicted": item["label"],
        "confidence": item["confidence"], "label": "Pro", "reviewer": "Dr. A",
        "model": "tiny.onnx", "replaces": None}
    assert record["model_sha256"] == station.classifier.provenance["model_sha256"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"])
    assert item["id"] not in [i["id"] for i in queue(app)["items"]]
    again, body, _ = decide(app, item["path"], "Pre")
    assert again == 409 and "already decided" in body["error"] and body["decided"]["label"] == "Pro"
    station.close()
    app2, _ = open_station(results, tmp_path / "a.jsonl")  # the server restarted
    q = queue(app2)
    assert q["decided"] == 1 and item["id"] not in [i["id"] for i in q["items"]]
    assert decide(app2, item["path"], "Pro")[0] == 409
    status, replaced, _ = decide(app2, item["path"], "Early", replace=True)
    assert status == 200 and replaced["replaces"] == 1 and replaced["line"] == 2
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("body, status, words", [
    ({"path": "nope.jpg", "label": "Pro", "reviewer": "A"}, 404, "unknown path 'nope.jpg'"),
    ({"path": "/etc/passwd", "label": "Pro", "reviewer": "A"}, 404, "unknown path"),
    ({"label": "Pro", "reviewer": "A"}, 404, "unknown path None"),
    ({"path": "FIRST", "label": "Blast", "reviewer": "A"}, 400,
     "unknown label 'Blast'. Valid: Benign, Early, Pre, Pro"),
    ({"path": "FIRST", "label": "Pro"}, 400, "'reviewer' is missing"),
    ({"path": "FIRST", "label": "Pro", "reviewer": "  "}, 400, "'reviewer' is missing"),
    ({"path": "FIRST", "label": "Pro", "reviewer": "x\ny"}, 400, "printable text"),
    ({"path": "FIRST", "label": "Pro", "reviewer": "A", "replace": "yes"}, 400, "'replace'"),
    (["FIRST"], 400, "send a JSON object"),
])
def test_bad_decisions_get_4xx_json(app, body, status, words, tmp_path):
    first = queue(app)["items"][0]["path"]
    text = json.dumps(body).replace("FIRST", first)
    got, answer, _ = call(app, "POST", "/v1/review/decision", {"content-type": "application/json"},
                          text.encode())
    assert got == status and words in answer["error"]
    assert queue(app)["decided"] == 0


def test_a_decision_must_be_json(app):
    first = queue(app)["items"][0]["path"]
    body = json.dumps({"path": first, "label": "Pro", "reviewer": "A"}).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        assert call(app, "POST", "/v1/review/decision", {"content-type": kind}, body)[0] == 415
    status, answer, _ = call(app, "POST", "/v1/review/decision",
                             {"content-type": "application/json"}, b"{not json")
    assert status == 400 and "not JSON" in answer["error"]


@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"}, {"origin": "null"},
    {"origin": "http://localhost:3000"},  # another local web app
    {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
    {"sec-fetch-site": "some-future-value"},
])
def test_cross_origin_decisions_are_refused(app, headers):
    first = queue(app)["items"][0]["path"]
    body = json.dumps({"path": first, "label": "Pro", "reviewer": "A"}).encode()
    status, answer, answer_headers = call(app, "POST", "/v1/review/decision",
                                          {"content-type": "application/json", **headers}, body)
    assert status == 403 and "cross-origin request refused" in answer["error"]
    assert not any(k.startswith("access-control") for k in answer_headers)
    assert queue(app)["decided"] == 0


def test_the_page_runs_only_its_own_inline_script_and_style(app):
    status, html, headers = call(app, "GET", "/review")
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = html.decode()
    policy = headers["content-security-policy"]
    for tag in ("script", "style"):
        (inline,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert "frame-ancestors 'none'" in policy and headers["x-frame-options"] == "DENY"
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere
    assert "<script src" not in html and "<link" not in html


def test_a_changed_or_missing_image_is_not_decided(open_station, tmp_path):
    a, b = make_images(tmp_path / "imgs", 2, seed=5)
    classified = hashlib.sha256(a.read_bytes()).hexdigest()
    rows = [{"path": str(p), "label": "Pre", "confidence": 0.4, "needs_review": True,
             "probabilities": {"Pre": 0.4, "Pro": 0.3, "Early": 0.2, "Benign": 0.1},
             "review_reasons": [], "sha256": classified if p == a else None} for p in (a, b)]
    results = tmp_path / "watch.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    app, _ = open_station(results)
    shutil.copyfile(b, a)  # a's bytes are no longer those watch classified
    status, body, _ = decide(app, str(a), "Pro")
    assert status == 409 and "changed since it was classified" in body["error"]
    b.unlink()
    status, body, _ = decide(app, str(b), "Pro")
    assert status == 410 and "no longer there" in body["error"]
    image_id = next(i["id"] for i in queue(app)["items"] if i["path"] == str(b))
    assert call(app, "GET", f"/v1/review/image/{image_id}")[0] == 410


def test_csv_results_and_rows_appended_later(open_station, tiny_model_path, tmp_path):
    images = make_images(tmp_path / "imgs", 3, seed=9)
    results = infer_results(tiny_model_path, images[:2], tmp_path / "results.csv", "csv")
    app, _ = open_station(results)
    q = queue(app)
    assert q["format"] == "csv" and len(q["items"]) == 2
    assert q["items"][0]["input_checks"] is None and q["items"][0]["reasons"]
    more = infer_results(tiny_model_path, images[2:], tmp_path / "more.csv", "csv")
    with open(results, "a") as f:  # as watch appends
        f.write(more.read_text().split("\n", 1)[1])
    assert len(queue(app)["items"]) == 3
    assert decide(app, str(images[2]), "Benign")[0] == 200
