"""KFP component: prepare-rollout."""
