"""Pipeline definitions and the llm-rollout command line."""
