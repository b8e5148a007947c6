"""Manifests, audio I/O, batching and corpus tools."""
