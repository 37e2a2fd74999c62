"""HTTP layer of the registry: dependencies, error mapping, routes."""
