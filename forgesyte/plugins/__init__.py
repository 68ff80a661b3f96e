"""Plugins: the protocol (base), discovery (registry), and the built-ins."""
