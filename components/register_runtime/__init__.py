"""KFP component: register-runtime."""
