"""Fault injection, HTTP bodies: bytes that are not UTF-8, JSON nested too deep, the wrong Content-Type.

Issue 14, work item 4. Before: 400 "There was an error parsing the body" for the first two
and a 422 that never mentions Content-Type for the third. Now each answers the usual error
body (`message` + `detail`) naming the problem, and well-formed requests are unaffected.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.predictor import Predictor
from inference.server.app import create_app
from inference.server.errors import json_depth_exceeds
from inference.server.limits import DEFAULT_LIMITS, ServerLimits

PARAGRAPHS = ["工业和信息化部要加快推进制造业数字化转型。", "国务院要培育一批专精特新中小企业。"]
JSON = {"content-type": "application/json"}


def light_predictor(model_dir: Path) -> Predictor:
    """The real Predictor with the lead-sentence summariser (no sentence encoder to load)."""
    from inference.summarize import Summarizer

    return Predictor(model_dir, summarizer=Summarizer())


@pytest.fixture(scope="module")
def client(tiny_tagger_dir: Path):
    app = create_app(tiny_tagger_dir, max_batch=8, max_chars=300, max_documents=3, max_total_chars=1000,
                     poll_seconds=0, predictor_factory=light_predictor)
    with TestClient(app) as test_client:
        yield test_client


def assert_error_body(response: Any, status: int, *phrases: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "detail"}, body
    assert body["detail"] and all({"loc", "msg", "type"} <= set(d) for d in body["detail"])
    for phrase in phrases:
        assert phrase in body["message"], body["message"]
    assert response.headers["x-model-version"] == "tiny-test"
    return body


def nested(depth: int) -> bytes:
    """{"paragraphs": [[...["x"]...]]}: `depth` levels of arrays/objects in all."""
    return b'{"paragraphs": ' + b"[" * (depth - 1) + b'"x"' + b"]" * (depth - 1) + b"}"


# ---------------------------------------------------------------------------
# invalid UTF-8
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/tag", "/v1/analyze"])
def test_invalid_utf8_body_is_400_naming_the_byte(client: TestClient, path: str) -> None:
    raw = '{"paragraphs": ["推动'.encode() + b"\x91\x92" + b'"]}'
    response = client.post(path, content=raw, headers=JSON)
    body = assert_error_body(response, 400, "body is not valid UTF-8", "byte 0x91")
    assert body["detail"][0]["type"] == "invalid_utf8"
    assert "error parsing the body" not in response.text


def test_gbk_body_is_400_not_mojibake(client: TestClient) -> None:
    raw = json.dumps({"paragraphs": PARAGRAPHS}, ensure_ascii=False).encode("gbk")
    assert_error_body(client.post("/v1/tag", content=raw, headers=JSON), 400, "body is not valid UTF-8")


# ---------------------------------------------------------------------------
# nesting depth
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [DEFAULT_LIMITS.max_json_depth + 1, 100_000])
def test_too_deep_json_is_400_naming_the_limit(client: TestClient, depth: int) -> None:
    started = time.perf_counter()
    response = client.post("/v1/tag", content=nested(depth), headers=JSON)
    limit = DEFAULT_LIMITS.max_json_depth
    body = assert_error_body(response, 400, f"nested more than {limit} levels", f"max_json_depth={limit}")
    assert body["detail"][0]["type"] == "json_too_deep"
    assert time.perf_counter() - started < 5


def test_depth_at_the_limit_reaches_validation(client: TestClient) -> None:
    response = client.post("/v1/tag", content=nested(DEFAULT_LIMITS.max_json_depth), headers=JSON)
    assert_error_body(response, 422, "paragraphs[0]")  # a list is not a string: the routes saw it


def test_brackets_inside_strings_do_not_count(client: TestClient) -> None:
    texts = ["【" + "[" * 80 + "{" * 80 + "】推动5G网络建设。", 'say "[[[" \\ then ' + "]" * 90]
    response = client.post("/v1/tag", json={"paragraphs": texts})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2


def test_depth_scan_is_linear_on_hostile_strings() -> None:
    hostile = '{"a": "' + '\\"' * 300_000 + "[" * 100  # an unterminated string full of escaped quotes
    started = time.perf_counter()
    assert not json_depth_exceeds(hostile, 64)  # the brackets are inside the (unterminated) string
    assert json_depth_exceeds("[" * 65 + '"\\' , 64)
    assert not json_depth_exceeds('[[["]]]]]]]]"]]]', 3)
    assert time.perf_counter() - started < 2


def test_depth_limit_is_defined_once() -> None:
    assert DEFAULT_LIMITS.max_json_depth == 64
    assert ServerLimits.from_env({"POLICYLENS_SERVE_MAX_JSON_DEPTH": "8"}).max_json_depth == 8
    with pytest.raises(ValueError, match="max_json_depth"):
        ServerLimits(max_json_depth=0)


def test_custom_depth_limit(tiny_tagger_dir: Path) -> None:
    app = create_app(tiny_tagger_dir, poll_seconds=0, max_json_depth=3, predictor_factory=light_predictor)
    with TestClient(app) as small:
        assert small.post("/v1/tag", json={"paragraphs": PARAGRAPHS}).status_code == 200
        assert_error_body(small.post("/v1/tag", content=nested(4), headers=JSON), 400, "the limit is max_json_depth=3")


# ---------------------------------------------------------------------------
# Content-Type
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/xml", "", None])
def test_wrong_content_type_is_415_naming_the_expected_type(client: TestClient, content_type: str | None) -> None:
    raw = json.dumps({"paragraphs": PARAGRAPHS}, ensure_ascii=False).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/v1/tag", content=raw, headers=headers)
    body = assert_error_body(response, 415, "application/json", "Content-Type")
    assert body["detail"][0]["type"] == "unsupported_media_type"


def test_non_utf8_charset_is_415(client: TestClient) -> None:
    raw = json.dumps({"paragraphs": PARAGRAPHS}).encode()
    response = client.post("/v1/tag", content=raw, headers={"content-type": "application/json; charset=latin-1"})
    assert_error_body(response, 415, "charset 'latin-1'", "UTF-8")


@pytest.mark.parametrize("headers", [{"content-type": "application/json; charset=UTF-8"},
                                     {"content-type": "application/merge-patch+json"}])
def test_json_bodies_still_pass(client: TestClient, headers: dict[str, str]) -> None:
    raw = json.dumps({"paragraphs": PARAGRAPHS}, ensure_ascii=False).encode()
    response = client.post("/v1/tag", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2


def test_body_less_posts_are_not_checked(client: TestClient) -> None:
    """POST /v1/admin/reload has no body: no Content-Type is needed."""
    response = client.post("/v1/admin/reload?force=false", headers={"content-type": "text/plain"})
    assert response.status_code == 200, response.text
    # an empty /v1/tag body is still the routes' 422 (missing body), not a 415
    assert client.post("/v1/tag", content=b"", headers={"content-type": "text/plain"}).status_code == 422
