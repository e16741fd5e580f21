"""Content identity from the object store (issue 27): a scheduled run's "same weights" is the
model manifest's ETag, read with a HEAD, not the URI; anything unreadable falls back to the digest.

The store is a local HTTP server that answers HEAD like S3/MinIO/SeaweedFS (path-style
``/BUCKET/KEY``, ``ETag`` and ``Last-Modified``, 404 for a missing key, 403 without a valid
SigV4 ``Authorization`` when keys are required).
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from llm_rollout.model_source import store_content_id
from llm_rollout.steps import prepare_step


class _Store(BaseHTTPRequestHandler):
    objects: ClassVar[dict[str, str]] = {}
    need_auth = False
    seen: ClassVar[list[dict[str, str]]] = []

    def do_HEAD(self):
        type(self).seen.append(dict(self.headers))
        if self.need_auth and not (self.headers.get("authorization") or "").startswith(
            "AWS4-HMAC-SHA256 Credential=AK/"
        ):
            self.send_response(403)
        elif self.path in self.objects:
            self.send_response(200)
            self.send_header("ETag", f'"{self.objects[self.path]}"')
            self.send_header("Last-Modified", "Sun, 06 Dec 2026 03:00:00 GMT")
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def store():
    _Store.objects, _Store.need_auth, _Store.seen = {}, False, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    # poll_interval: shutdown() returns within 0.05 s instead of up to 0.5 s (each test's teardown)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield _Store, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_same_etag_same_identity_new_etag_new_identity(store):
    handler, url = store
    handler.objects = {"/mlpipeline/models/m/model.safetensors": "aaa", "/mlpipeline/models/m/config.json": "ccc"}
    first = store_content_id("minio://mlpipeline/models/m", endpoint=url)
    assert first.startswith("etag:sha256:")
    assert store_content_id("minio://mlpipeline/models/m/", endpoint=url) == first
    handler.objects["/mlpipeline/models/m/model.safetensors"] = "bbb"  # retrained weights, same URI
    assert store_content_id("minio://mlpipeline/models/m", endpoint=url) not in ("", first)


def test_unreadable_store_falls_back(store, monkeypatch):
    handler, url = store
    assert store_content_id("s3://mlpipeline/models/none", endpoint=url) == "", "no manifest"
    handler.objects = {"/b/m/config.json": "ccc"}
    handler.need_auth = True
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    assert store_content_id("s3://b/m", endpoint=url) == "", "403 without keys"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SK")
    assert store_content_id("s3://b/m", endpoint=url).startswith("etag:"), "signed with SigV4"
    assert handler.seen[-1]["x-amz-content-sha256"] and handler.seen[-1]["x-amz-date"]
    assert store_content_id("s3://b/m", endpoint="http://127.0.0.1:9") == "", "unreachable"


def test_prepare_uses_the_store_identity_as_the_cache_key(store, monkeypatch):
    handler, url = store
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    handler.objects = {"/mlpipeline/models/m/model.safetensors": "aaa"}
    spec = '{"platform": "kserve", "namespace": "team-a"}'
    one = prepare_step(spec, model_uri="minio://mlpipeline/models/m", for_optimize=True, run_id="r1")
    two = prepare_step(spec, model_uri="minio://mlpipeline/models/m", for_optimize=True, run_id="r2")
    assert one["content_id"] == two["content_id"] and one["content_id"].startswith("etag:")
    assert one["lineage"]["content_id"] == "", "not a model digest: deploy's already-promoted test keeps the digest"
    handler.objects["/mlpipeline/models/m/model.safetensors"] = "bbb"
    three = prepare_step(spec, model_uri="minio://mlpipeline/models/m", for_optimize=True, run_id="r3")
    assert three["content_id"] != one["content_id"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert prepare_step(spec, model_uri="minio://mlpipeline/models/m", run_id="r4")["content_id"] == "run:r4"
