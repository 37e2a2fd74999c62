"""The contract registry: organisations, OAuth clients, contracts, jobs and the audit log.

Build the app with :func:`services.registry.app.create_app`; migrate its database with
:mod:`services.registry.migrate`.
"""
