"""Interoperability with other libraries' checkpoints (OpenCLIP)."""
