"""The YAML loader the tests parse large files with (CRDs, compiled pipeline IR, upstream presets)."""

from __future__ import annotations

import yaml

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML has it (multi-MB CRDs and ~60 KB IR parse ~10x faster), else the
pure-Python one; both give the same documents."""
