"""HTTP plumbing shared by the FastAPI services: body limits, the error-body mapping, probes,
metrics, correlation ids and structured logs.

Imports FastAPI/Starlette and the protocol's error types; never a service, never a database.
"""
