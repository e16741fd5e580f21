"""KFP v2 component wrappers (thin): one folder per component."""
