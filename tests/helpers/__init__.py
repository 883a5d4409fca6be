"""Test helpers shared by the unit and integration suites: tiny models, tiny registered
detectors and synthetic data (import as `tests.helpers.<module>`)."""
