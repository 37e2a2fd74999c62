"""Computation shared by the party service and local baselines: tables, segments, metrics.

Imports torch and pyarrow; imports neither FastAPI nor any other Splice service.
"""
