"""Helpers shared by the tests (not tests themselves); import as ``from support.x import y``."""
