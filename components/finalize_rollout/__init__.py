"""KFP component: finalize-rollout."""
