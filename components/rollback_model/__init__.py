"""KFP component: rollback-model."""
