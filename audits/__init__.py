"""Audit tooling for govern: the hash-chained audit trail and its export/verify helpers."""
