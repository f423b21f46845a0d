"""Phaseguard worker: the functional core (domain), Redis store, consumer, jobs and CLI."""
