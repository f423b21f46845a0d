"""Functional core: pure, deterministic rule engine. No I/O imports (enforced by a test)."""
