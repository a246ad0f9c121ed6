"""Prometheus exporter: the recorder's per-interval rows as counters, gauges and histograms."""
