"""HTTP plumbing shared by the FastAPI services: body limits and the error-body mapping.

Imports FastAPI/Starlette and the protocol's error types; never a service, never a database.
"""
