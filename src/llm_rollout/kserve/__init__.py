"""The ``kserve`` platform: vLLM on KServe, as an InferenceService or an llm-d group.

:class:`~llm_rollout.kserve.platform.KServePlatform` implements :class:`llm_rollout.platform.Platform`;
the steps reach everything here through it. What lives where:

- ``platform.py``: :class:`KServePlatform`: the GPU preflight, the SIGTERM rollback around deploy
  and validation, the typed results.
- ``builders/``: pure builders, spec in, object out (``common``, ``isvc``: ServingRuntime and
  InferenceService, ``llmd``: LLMInferenceService members, preset and scheduler config, ``rbac``
  and :func:`~llm_rollout.kserve.builders.render_all` for ``manifests/``).
- ``variants/``: the three ways of serving, one strategy class each, chosen once from the spec
  (or, for status and restore by name, from what the cluster has): ``isvc.py`` (InferenceService
  in Standard and in Knative mode) and ``llmd.py`` (an llm-d group of LLMInferenceService
  members), behind ``base.Variant``. Only they know what differs; the modules below do the rest.
- ``deploy.py``: register the runtime; roll a revision out beside the stable one (plan, preflight
  dry run, apply, wait, probe) -> :class:`~llm_rollout.record.DeploymentRecord`;
  ``preflight.py``: the server-side dry run before a step's first write.
- ``wait.py``: watch-driven, generation-aware readiness of InferenceService / LLMInferenceService,
  and the endpoint probe; ``diagnose.py``: why it is not ready (likely causes, pods, events).
- ``views.py``: typed read-only views over the live InferenceService, its predictors and the
  llm-d members (what the variants read, each field once).
- ``records.py``: the promotion record (typed ``StableRecord``/``HistoryEntry``: stable,
  previous-stable, history) in annotations on the service's Lease ``<service>-rollout``, never on
  the InferenceService, whose metadata KServe copies into the pod template
  (:class:`~llm_rollout.kserve.records.ServiceRef`).
- ``lease.py``: one rollout of a service at a time: that ``coordination.k8s.io/v1`` Lease's holder (a
  field manager per run), and the migration of state earlier versions kept on the service object.
- ``promote.py``: promotion, stepped with ``canary.steps``; ``gate.py``: the gate re-run at each
  step (with the canary-traffic proof).
- ``rollback.py``: rollback, the exit handler (``finalize_run``) and the rollback on SIGTERM.
- ``restore.py``: ``llm-rollout rollback NAME`` (the previous stable model back).
- ``status.py``: ``llm-rollout status`` as a typed :class:`~llm_rollout.platform.Status`.
- ``addresses.py``: the Services' in-cluster addresses (``<svc>.<ns>.svc.<cluster_domain>``) and
  ``$LLM_ROLLOUT_ADDRESS_MAP`` (cluster addresses reachable from outside).
"""
