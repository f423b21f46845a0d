"""Replay of real and synthetic trade histories."""
