"""Maintenance from cron: playbook runs, their actions, and crontab entries."""
