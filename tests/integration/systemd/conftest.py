"""The fixtures live in service.py (one module, named where they come from)."""

from tests.integration.systemd.service import machine, service

__all__ = ["machine", "service"]
