"""The ``local`` platform: the whole rollout on this machine, vLLM processes and a state directory.

What lives where:

- :mod:`llm_rollout.local.platform`: :class:`~llm_rollout.local.platform.LocalPlatform`, the
  :class:`~llm_rollout.platform.Platform` for ``platform: local`` (register, deploy, validation
  target, promote, rollback, finalize, status, restore_previous), acting on the state directory.
- :mod:`llm_rollout.local.server`: one vLLM server process: its command line and environment,
  start, readiness, ownership while it starts, identity checks and stop.
- :mod:`llm_rollout.local.runtime`: register-runtime: vLLM's own check of the server arguments
  and ``runtime.json``.
- :mod:`llm_rollout.local.state`: the state directory: ``state.json``
  (:class:`~llm_rollout.local.state.LocalState`: the stable record, the previous one, the
  history), ``servers/<member>.json`` (:class:`~llm_rollout.local.state.ServerRecord`), the lock
  and the atomic JSON writes.
- :mod:`llm_rollout.local.session`: one run's servers from start to cleanup
  (:func:`~llm_rollout.local.session.local_session`), and the baseline server validation
  compares against.

The steps reach it only through :func:`llm_rollout.platform.platform_for`.
"""
