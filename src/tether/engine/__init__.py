"""Durable workflows: steps, journal, recovery, workers."""
