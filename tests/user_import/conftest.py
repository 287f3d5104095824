"""The admin backend's harness (a real db_proxy and route server in process), shared."""

from tests.admin_backend.conftest import harness

__all__ = ["harness"]
