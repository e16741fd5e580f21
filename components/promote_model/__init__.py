"""KFP component: promote-model."""
