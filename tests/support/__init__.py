"""Helpers shared by the tests (imported, not collected): real data, payload builders, synthetic runs."""
