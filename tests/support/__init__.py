"""Plain helpers of the tests, imported by them; fixtures stay in the conftest.py files."""
