"""Snapshots of indexes (service.py), taken on a schedule too (schedule.py), and whole-service backups (backup.py)."""
