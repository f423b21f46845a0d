"""Signed operator requests: signing, verification, lockout."""
