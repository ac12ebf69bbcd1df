"""Lab fixture: sshd (see tests/lab/requirements.py for skip rules)."""
