"""KFP component: optimize-model."""
