"""Protocol version carried by every message."""

PROTOCOL_VERSION = "1"
"""Bumped whenever a message gains a required field or changes meaning."""

TENSOR_MEDIA_TYPE = "application/vnd.splice.tensors"
"""Content type of binary messages: a safetensors file whose metadata holds the JSON header."""
