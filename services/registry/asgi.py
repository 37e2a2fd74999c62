"""ASGI entry point of a registry worker: ``uvicorn --factory
services.registry.asgi:app_from_environment``. Settings come from ``SPLICE_REGISTRY_*``."""

from __future__ import annotations

from fastapi import FastAPI

from services.registry.app import create_app
from services.registry.settings import RegistrySettings


def app_from_environment() -> FastAPI:
    """The registry app for the settings in this process's environment."""
    return create_app(RegistrySettings())
