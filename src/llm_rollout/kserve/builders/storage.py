"""KServe's access to the model's object store: the serving ServiceAccount and its S3 Secret.

KServe's storage initializer gets its S3 settings from the serving pods' ServiceAccount: every
Secret the account lists is read, and one holding the S3 secret-key field becomes the
initializer's environment (kserve ``pkg/credentials/service_account_credentials.go``
``CreateSecretVolumeAndEnvFromServiceAccount`` -> ``mountSecretCredential``, which tests
``secret.Data[awsSecretAccessKey]``; ``pkg/credentials/s3/s3_secret.go`` ``BuildSecretEnvs``: the
keys ``awsAccessKeyID``/``awsSecretAccessKey`` become ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``;
``pkg/credentials/s3/utils.go`` ``BuildS3EnvVars``: the ``serving.kserve.io/s3-*`` annotations become
``S3_ENDPOINT``, ``AWS_ENDPOINT_URL``, ``S3_USE_HTTPS``, ``S3_VERIFY_SSL``, ``AWS_DEFAULT_REGION``,
``AWS_CA_BUNDLE_CONFIGMAP``). Without an endpoint the initializer goes to AWS.

The Secret is rendered without data: the keys are the store's (KFP's ``mlpipeline-minio-artifact``
holds them as ``accesskey``/``secretkey``), put in by whoever administers the namespace (README);
``kubectl apply`` of this manifest keeps data it does not name.
"""

from __future__ import annotations

from typing import Any

from llm_rollout.errors import SpecError
from llm_rollout.kserve.builders.common import GROUP
from llm_rollout.spec import RolloutSpec
from llm_rollout.spec.serving import ModelStore

ACCESS_KEY_FIELD = "awsAccessKeyID"
SECRET_KEY_FIELD = "awsSecretAccessKey"
"""Key names KServe reads from the Secret (``s3_secret.go`` ``AWSAccessKeyIdName``,
``AWSSecretAccessKeyName``; the defaults of the ``credentials.s3`` block of inferenceservice-config)."""
S3_ANNOTATIONS = {
    "endpoint": f"{GROUP}/s3-endpoint",
    "use_https": f"{GROUP}/s3-usehttps",
    "verify_ssl": f"{GROUP}/s3-verifyssl",
    "region": f"{GROUP}/s3-region",
    "ca_bundle_configmap": f"{GROUP}/s3-cabundle-configmap",
}
"""``s3_secret.go``: ``InferenceServiceS3SecretEndpointAnnotation``, ``...HttpsAnnotation``,
``...SSLAnnotation``, ``...RegionAnnotation``, ``InferenceServiceS3CABundleConfigMapAnnotation``."""


def store_annotations(store: ModelStore) -> dict[str, str]:
    """The Secret's ``serving.kserve.io/s3-*`` annotations for ``store`` (``BuildS3EnvVars`` reads them).

    ``s3-usehttps`` and ``s3-verifyssl`` are ``"1"``/``"0"`` as KServe's S3 guide writes them (the
    storage initializer tests ``S3_USE_HTTPS``/``S3_VERIFY_SSL`` against ``"0"``).
    """
    notes = {
        S3_ANNOTATIONS["use_https"]: "1" if store.use_https else "0",
        S3_ANNOTATIONS["verify_ssl"]: "1" if store.verify_ssl else "0",
    }
    if store.endpoint:
        notes[S3_ANNOTATIONS["endpoint"]] = store.endpoint
    if store.region:
        notes[S3_ANNOTATIONS["region"]] = store.region
    if store.ca_bundle_configmap:
        notes[S3_ANNOTATIONS["ca_bundle_configmap"]] = store.ca_bundle_configmap
    return dict(sorted(notes.items()))


def effective_store(spec: RolloutSpec, model_uri: str | None) -> ModelStore | None:
    """The store KServe reads the model at ``model_uri`` from, or None (``ModelStore.serves``).

    ``runtime.model_store`` defaults to KFP's default store for its pipeline-root bucket, so a run
    with default parameters (the optimized model under ``minio://mlpipeline/v2/artifacts``) gets
    the store's account; ``hf://``, ``pvc://``, ``gs://`` and other buckets get none, nor does any
    model with ``enabled: false``.
    """
    store = spec.runtime.model_store
    return store if store.serves(model_uri) else None


def serving_account(spec: RolloutSpec, model_uri: str | None) -> str | None:
    """The serving pods' ``serviceAccountName`` for the model at ``model_uri``: the effective
    store's account (:func:`effective_store`), else ``runtime.service_account``.

    Raises:
        SpecError: The store applies and ``runtime.service_account`` names another account (KServe
            reads one account's Secrets), or the store's account is the steps' own.
    """
    store, own = effective_store(spec, model_uri), spec.runtime.service_account
    if store and own and own != store.service_account:
        raise SpecError(
            "runtime.service_account",
            f"{own!r} differs from runtime.model_store.service_account {store.service_account!r}, and the model "
            f"{model_uri} is in the store; the serving pods run as one account, and KServe reads the model store's "
            "Secret from that account",
            "leave runtime.service_account unset, set runtime.model_store.service_account to the same name, or set "
            "runtime.model_store.enabled: false when that account reaches the store itself (workload identity)",
        )
    if store and store.service_account == spec.service_account:
        raise SpecError(
            "runtime.model_store.service_account",
            f"{store.service_account!r} is the pipeline steps' account, which may patch and delete InferenceServices",
            "name an account of its own for the serving pods (default kfp-model-reader)",
        )
    return store.service_account if store else own


def model_store_objects(spec: RolloutSpec, store: ModelStore | None = None) -> list[dict[str, Any]]:
    """The Secret (annotations, no data) and the ServiceAccount listing it, in the spec's namespace.

    Args:
        spec: The rollout spec (namespace, labels).
        store: The store to render (default ``spec.runtime.model_store``).

    Returns:
        ``[Secret, ServiceAccount]``, for the namespace's administrator to apply (README).
    """
    from llm_rollout.kserve.builders.common import MANAGED_BY

    store = store or spec.runtime.model_store
    labels = dict(MANAGED_BY)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": store.secret,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": store_annotations(store),
        },
        "type": "Opaque",
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": store.service_account, "namespace": spec.namespace, "labels": labels},
        "secrets": [{"name": store.secret}],
    }
    return [secret, account]


def model_store_rules(spec: RolloutSpec) -> list[dict[str, Any]]:
    """What deploy-model's model-store preflight reads: the account and the Secret, by name only.

    Granted whenever the store is enabled: the Role is rendered before a run knows its model's URI,
    and a pipeline's optimized model always lands in the pipeline root, KFP's store by default.
    """
    store = spec.runtime.model_store
    if not store.enabled:
        return []
    return [
        {"apiGroups": [""], "resources": [plural], "verbs": ["get"], "resourceNames": [name]}
        for plural, name in (("serviceaccounts", store.service_account), ("secrets", store.secret))
    ]


def model_store_problems(store: ModelStore, account: dict[str, Any] | None, secret: dict[str, Any] | None) -> list[str]:
    """What keeps KServe's storage initializer from reading the store, given the two live objects.

    Args:
        store: What the spec says.
        account: The live ServiceAccount, or None when it does not exist.
        secret: The live Secret, or None when it does not exist.

    Returns:
        One line per problem (empty: the initializer gets keys and endpoint). Never a key's value.
    """
    problems = []
    if account is None:
        problems.append(f"ServiceAccount {store.service_account!r} does not exist")
    elif store.secret not in [ref.get("name") for ref in account.get("secrets") or []]:
        problems.append(
            f"ServiceAccount {store.service_account!r} does not list Secret {store.secret!r} under secrets: KServe "
            "reads only the Secrets the account lists (CreateSecretVolumeAndEnvFromServiceAccount)"
        )
    if secret is None:
        problems.append(f"Secret {store.secret!r} does not exist")
        return problems
    data = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
    missing = [k for k in (ACCESS_KEY_FIELD, SECRET_KEY_FIELD) if not data.get(k)]
    if missing:
        problems.append(
            f"Secret {store.secret!r} has no {' or '.join(missing)} (KServe's key names; KFP's "
            "mlpipeline-minio-artifact calls them accesskey and secretkey)"
        )
    have = (secret.get("metadata") or {}).get("annotations") or {}
    for key, want in store_annotations(store).items():
        if have.get(key) != want:
            problems.append(f"Secret {store.secret!r} has {key}={have.get(key)!r}, the spec says {want!r}")
    return problems
