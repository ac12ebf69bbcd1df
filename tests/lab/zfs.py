"""Lab fixture: zfs (see tests/lab/requirements.py for skip rules)."""
