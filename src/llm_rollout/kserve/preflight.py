"""Server-side dry run of a step's objects before its first write (KServe's own verdict first)."""

from __future__ import annotations

from typing import Any

from llm_rollout.errors import PermanentError
from llm_rollout.kube import ApiError, ForbiddenError, KubeClient, NotFoundError
from llm_rollout.kube.resources import Resource
from llm_rollout.spec import RolloutSpec


class PreflightRefused(PermanentError):
    """The cluster refused an object of a step in a server-side dry run; nothing was applied.

    Attributes:
        step: The step that stopped.
        kind: The refused object's kind.
        name: The refused object's name.
        fields: The field paths the server named (may be empty).
    """

    def __init__(self, message: str, *, step: str, kind: str, name: str, fields: list[str]) -> None:
        super().__init__(message)
        self.step, self.kind, self.name, self.fields = step, kind, name, fields


def preflight(client: KubeClient, objects: list[dict[str, Any]], *, step: str) -> None:
    """Server-side dry run (``dryRun=All``) of every object of a step, before its first write.

    A dry run goes through the cluster's real admission chain (KServe's validating webhooks, the
    CRD schema and CEL rules, server-side apply ownership) without persisting anything, so KServe's
    own verdict is known before the step changes anything (not even its lease).

    Args:
        client: The kube client.
        objects: What the step is going to apply, in order.
        step: The step's name, for the message.

    Raises:
        PreflightRefused: An object was refused; the message carries the server's (the webhook's)
            message, the fields it named and what to change. Nothing was applied.
    """
    for obj in objects:
        meta = obj.get("metadata") or {}
        kind, name = (obj.get("kind", "object"), f"{meta.get('namespace')}/{meta.get('name')}")
        try:
            client.apply(obj, dry_run=True)
        except ApiError as err:
            fields = list(getattr(err, "fields", []) or [])
            text = str(err)
            if isinstance(err, ForbiddenError) and "admission webhook" in text:
                # controller-runtime answers a CustomValidator's error with 403 "admission webhook
                # ... denied the request: <KServe's message>" (inference_service_validation.go)
                fix = (
                    "Fix: the message is KServe's admission rule (pkg/apis/serving/v1beta1/"
                    "inference_service_validation.go or v1alpha2/llm_inference_service_validation.go); change "
                    "the spec field it names, or check that the cluster runs KServe >= 0.20 (spec.canary), "
                    "then run the step again"
                )
                text = f"{text}. {fix}"
            raise PreflightRefused(
                f"{step}: the cluster refused {kind} {name} in a server-side dry run (dryRun=All), so nothing "
                f"was applied: {text}",
                step=step,
                kind=kind,
                name=name,
                fields=fields,
            ) from err


SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
SECRETS = Resource("", "v1", "secrets", "Secret")


class ModelStoreUnreachable(PermanentError):
    """KServe's storage initializer could not read the model: the serving account or its Secret is
    missing or incomplete (``runtime.model_store``). Nothing was applied."""


def check_model_store(client: KubeClient, spec: RolloutSpec, model_uri: str) -> None:
    """Before deploy-model's first write: the serving account and its Secret hold what KServe reads.

    KServe gives the storage initializer the S3 keys and endpoint of the Secrets the serving pods'
    ServiceAccount lists (kserve ``pkg/credentials/service_account_credentials.go``
    ``CreateSecretVolumeAndEnvFromServiceAccount``); without them the pod starts, the download
    fails (or goes to AWS) and the rollout times out much later. Reads two objects by name (the
    Role grants ``get`` on those names only: ``builders/storage.py`` ``model_store_rules``); never
    logs a key's value. Nothing to do for a model outside the store (``builders/storage.py``
    ``effective_store``: ``hf://``, ``pvc://``, other buckets, ``runtime.model_store.enabled: false``).

    Raises:
        ModelStoreUnreachable: What is missing, and the commands that fix it.
        PermanentError: The step's account may not read them (the fix: apply rbac.yaml again).
    """
    from llm_rollout.kserve.builders.storage import effective_store, model_store_problems

    store = effective_store(spec, model_uri)
    if store is None:
        return
    ns = spec.namespace
    # ServiceAccounts and Secrets are core/v1, compiled into every API server and served from its
    # first answer: the client's grace for a type not served yet (CRD informers still syncing after a
    # restart) cannot apply, and a server without core/v1 would only make each read wait it out.
    quick = client.without_type_grace()

    def read(res: Resource, name: str) -> dict[str, Any] | None:
        try:
            return quick.get(res, name, ns)
        except NotFoundError:
            return None
        except ForbiddenError as err:
            raise PermanentError(
                f"deploy-model: may not read {res.kind} {ns}/{name} to check the model store ({err}). Fix: apply "
                f"the Role of `llm-rollout render --spec SPEC` (rbac.yaml: get on {res.plural} {name!r})"
            ) from err

    problems = model_store_problems(store, read(SERVICE_ACCOUNTS, store.service_account), read(SECRETS, store.secret))
    if problems:
        raise ModelStoreUnreachable(
            f"deploy-model: KServe's storage initializer could not read the model from the store at "
            f"{store.endpoint or 'AWS S3'} in namespace {ns}: " + "; ".join(problems) + ". Nothing was applied. "
            f"Fix: as the namespace's admin, create Secret {store.secret} with keys awsAccessKeyID and "
            "awsSecretAccessKey (KFP's store: copy accesskey and secretkey of its mlpipeline-minio-artifact "
            f"Secret), then `kubectl -n {ns} apply -f kserve-model-store.yaml` from `llm-rollout render --spec "
            "SPEC` (the Secret's annotations and the ServiceAccount listing it; README: KServe reading the model)"
        )
