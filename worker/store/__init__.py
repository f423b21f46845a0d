"""Redis persistence: key names, state codec, unit of work."""
