"""Container-side library of the LLM rollout components (no kfp import)."""
