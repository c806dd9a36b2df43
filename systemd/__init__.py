"""Service templates for systemd and launchd (package data: assistantd.systemd)."""
