"""vhtune: eBPF-assisted observability and tuning for vhost networking."""

__version__ = "0.1.0"
