"""Synthetic seed data in the course CSV format (see ``generator``)."""
