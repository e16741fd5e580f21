"""The ``kserve`` platform: vLLM on KServe, as an InferenceService or an llm-d group.

:class:`~llm_rollout.kserve.platform.KServePlatform` implements :class:`llm_rollout.platform.Platform`.
"""
