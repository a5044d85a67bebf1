"""The operator's state store (SQLite by default)."""
