"""Operating tether: health endpoints, the worker supervisor (top layer)."""
