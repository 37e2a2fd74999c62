"""Registry endpoints, one module per noun."""
