"""Lab fixture: pve (see tests/lab/requirements.py for skip rules)."""
