"""KFP component: deploy-model."""
