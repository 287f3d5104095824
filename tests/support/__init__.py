"""Helpers shared by the test suites: databases to test against, a wire client."""
