"""register-runtime: make the vLLM runtime available on the target platform."""


def register_runtime(spec: str) -> str:
    """Registers the vLLM ServingRuntime (kserve) or checks the local vLLM runtime (local).

    On ``kserve`` it checks that the KServe CRDs are installed in the versions the spec needs and
    applies the namespaced ``ServingRuntime`` with server-side apply (a rerun changes nothing).
    On ``local`` vLLM's own parser checks the server arguments in the vLLM environment; a check
    that passed is kept (``$LLM_ROLLOUT_CACHE/probes``), so the same arguments in the same vLLM
    build are not parsed again, and an argument vLLM does not know fails here, not at deploy.

    Args:
        spec: The rollout spec as JSON (every field: docs/spec.md, or ``llm-rollout spec FIELD``).

    Returns:
        The runtime's name.
    """
    from llm_rollout.steps import register_runtime_step

    return register_runtime_step(spec)
