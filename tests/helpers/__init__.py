"""Helpers shared by several test modules (never a test module itself: no test module imports another).

tests/ is on sys.path (pytest puts the rootdir conftest's folder there), so a test imports these as
`from helpers.webhook import Receiver`. Shared fixtures are registered in tests/conftest.py
(`pytest_plugins`), so tests request them by name without importing anything.
"""
