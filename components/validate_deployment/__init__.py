"""KFP component: validate-deployment."""
