"""Where a run's model comes from, as KFP on a cluster sees it, and the model's content identity.

Two facts from KFP 2.17's backend decide what a pipeline may do with a model URI:

- The importer accepts only object-store and OCI URIs: ``oci://`` for Models, else a provider
  scheme (kubeflow/pipelines ``backend/src/v2/component/importer_launcher.go``
  ``ImportSpecToMLMDArtifact`` -> ``objectstore.ParseProviderFromPath``: ``gs``, ``s3``,
  ``minio``, ``mem``). An ``hf://`` or ``pvc://`` URI fails the importer's pod, while kfp.local
  accepts anything. So such URIs travel as a plain parameter, and their lineage is metadata.
- The cache key is the input artifacts' *names* plus the input parameters
  (``backend/src/v2/cacheutils/cache.go`` ``GenerateCacheKey``), and an importer with
  ``reimport=False`` reuses the artifact already registered for the same URI
  (``findOrNewArtifactToImport``). New weights written to the same URI therefore hit the cache of
  every step that takes the model. The content identity below is a parameter of those steps, so
  new content is a new key and unchanged content is the same key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llm_rollout.errors import SpecError

IMPORTER_SCHEMES = ("gs", "s3", "minio", "mem", "oci")
"""Schemes KFP 2.17's importer accepts (``importer_launcher.go``; ``objectstore/config.go``)."""

LAUNCHER_DOWNLOAD_SCHEMES = ("gs", "s3", "minio")
"""Schemes whose artifacts KFP's launcher downloads into a step's pod (``argocompiler/container.go``
mounts ``/gcs``, ``/s3``, ``/minio`` for them), so a step taking ``Input[Model]`` gets the bytes."""

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
"""The step pod's own namespace (what KFP's ``config/env.go`` reads too)."""


def uri_scheme(uri: str) -> str:
    """The URI's scheme (``""`` for a local path)."""
    return urlparse(uri).scheme if "://" in uri else ""


def importable(uri: str) -> bool:
    """True when KFP's importer accepts ``uri`` on a cluster (see :data:`IMPORTER_SCHEMES`)."""
    return uri_scheme(uri) in IMPORTER_SCHEMES


def content_id(uri: str) -> str:
    """The model's content identity: ``sha256:...`` of a local directory's config and weights.

    Object-store URIs return ``""`` (unknown here): the caller then treats every run as new
    content, so the optimize step runs again and the digest of its output decides whether the
    model is already the stable one.

    Args:
        uri: A local directory, ``file://`` URI or any other model URI.

    Returns:
        The digest, or ``""`` when it cannot be known from here.
    """
    from llm_rollout.model_files import local_path, model_digest

    if uri_scheme(uri) not in ("", "file"):
        return ""
    path = local_path(uri)
    if not path.is_dir():
        return ""
    return model_digest(path)


def _own_namespace(path: str = SERVICE_ACCOUNT_NAMESPACE) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def effective_spec_doc(spec: str, platform: str = "", namespace: str = "", *, own_namespace: str | None = None) -> dict:
    """The spec document a run uses: ``spec`` with the pipeline's ``platform`` and ``namespace``.

    The two pipeline parameters are the main choices in the KFP UI; the JSON spec holds the rest.
    A parameter that contradicts the same field written in the spec is refused (which one was
    meant is not knowable). An empty ``namespace`` means the spec's, else the namespace the step's
    pod runs in (the run's own namespace on KFP), else the spec default.

    Args:
        spec: The rollout spec as JSON (``""`` or ``{}``: defaults).
        platform: ``kserve``, ``local`` or ``""`` (the spec's).
        namespace: The namespace of the model server, or ``""``.
        own_namespace: The pod's namespace (default: read from the service account mount).

    Returns:
        The merged document (parse it with :func:`llm_rollout.spec.parse_spec`).

    Raises:
        SpecError: The spec is not a JSON object, or a parameter contradicts the spec.
    """
    try:
        doc: Any = json.loads(spec) if spec and spec.strip() else {}
    except json.JSONDecodeError as err:
        raise SpecError("spec", f"is not JSON ({err.msg} at character {err.pos})", "pass a JSON object") from err
    if not isinstance(doc, dict):
        raise SpecError("spec", f"is a JSON {type(doc).__name__}, not an object", 'pass e.g. {"canary": {...}}')
    doc = dict(doc)
    for field, value in (("platform", platform), ("namespace", namespace)):
        if value and doc.get(field) not in (None, value):
            raise SpecError(
                field,
                f"the pipeline parameter {field}={value!r} contradicts the spec's {field}: {doc[field]!r}",
                f"set only the {field} parameter (remove {field!r} from the spec JSON) or make them equal",
            )
        if value:
            doc[field] = value
    if not doc.get("namespace"):
        own = _own_namespace() if own_namespace is None else own_namespace
        if own:
            doc["namespace"] = own
    return doc


MANIFEST_FILES = ("model.safetensors.index.json", "model.safetensors", "config.json")
"""The files whose object-store identity stands for the model's: the weights' manifest (sharded
models) or the single weights file, and the config. A retrain rewrites them; an ETag (S3, MinIO,
SeaweedFS: the content's MD5 for a single-part upload) or a generation (GCS) changes with them."""


def _sigv4_headers(url: str, region: str, access_key: str, secret_key: str, now: Any = None) -> dict[str, str]:
    """AWS Signature Version 4 headers of a ``HEAD`` with an empty body (AWS's "Signature Version 4
    signing process"; what botocore's ``S3SigV4Auth`` sends), for S3-compatible stores."""
    import datetime
    import hashlib
    import hmac
    from urllib.parse import quote

    parsed = urlparse(url)
    now = now or datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    empty = hashlib.sha256(b"").hexdigest()
    headers = {"host": parsed.netloc, "x-amz-content-sha256": empty, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["HEAD", quote(parsed.path or "/", safe="/-_.~"), "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
         signed, empty]
    )  # fmt: skip
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


def store_content_id(uri: str, *, endpoint: str | None = None, timeout_s: float = 10.0) -> str:
    """The model's identity in its object store: ``etag:sha256...`` of its manifest files' ETags.

    A ``HEAD`` of each of :data:`MANIFEST_FILES` under the model's prefix (path-style
    ``ENDPOINT/BUCKET/KEY``), signed with SigV4 when ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    are set (KFP's launcher reads the same store with the keys of ``mlpipeline-minio-artifact``,
    ``config/env.go``). The ETag or GCS generation (``x-goog-generation``) of every file found
    enters the identity, with ``Last-Modified``. Anything that keeps it from answering (no
    endpoint, refused, 403, no manifest) returns ``""``, and the caller falls back to the digest.

    Args:
        uri: ``s3://``, ``minio://`` or ``gs://`` model URI.
        endpoint: ``http(s)://host:port`` of the S3 API (default ``$AWS_ENDPOINT_URL``, else for
            ``minio://`` KFP's default store ``http://seaweedfs.kubeflow:9000``, for ``s3://``
            AWS, for ``gs://`` ``https://storage.googleapis.com``).
        timeout_s: Per request.

    Returns:
        The identity, or ``""``.
    """
    import hashlib
    import os

    import httpx

    scheme = uri_scheme(uri)
    if scheme not in ("s3", "minio", "gs"):
        return ""
    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    default = {
        "minio": "http://seaweedfs.kubeflow:9000",
        "s3": "https://s3.amazonaws.com",
        "gs": "https://storage.googleapis.com",
    }[scheme]
    base = (endpoint or os.environ.get("AWS_ENDPOINT_URL") or default).rstrip("/")
    access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    region = os.environ.get("AWS_DEFAULT_REGION") or ("minio" if scheme == "minio" else "us-east-1")
    seen = []
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as http:
            for name in MANIFEST_FILES:
                url = f"{base}/{bucket}/{prefix.strip('/')}/{name}"
                headers = _sigv4_headers(url, region, access, secret) if access and secret and scheme != "gs" else {}
                resp = http.head(url, headers=headers)
                if resp.status_code == 404:
                    continue
                if resp.status_code != 200:
                    return ""
                tag = resp.headers.get("x-goog-generation") or resp.headers.get("etag") or ""
                if not tag:
                    return ""
                seen.append(f"{name}\t{tag}\t{resp.headers.get('last-modified', '')}")
    except httpx.HTTPError:
        return ""
    if not seen:
        return ""
    return "etag:sha256:" + hashlib.sha256("\n".join(seen).encode()).hexdigest()
