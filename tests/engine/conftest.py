"""Engine tests use the shared fixtures of tests/conftest.py (make_app, app)."""
