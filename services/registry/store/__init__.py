"""Data functions of the registry: each takes a ``Session``, returns ORM models, and never commits.

The caller (a route, the CLI) owns the transaction and commits once the whole change, audit
entry included, is in. Domain errors are :class:`services.protocol.errors.SpliceError`
subclasses; the app factory maps them to HTTP.
"""
