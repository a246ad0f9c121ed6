"""`vhtune agent`: probes kept attached, discovery refreshed, Prometheus metrics, a rolling recording."""
