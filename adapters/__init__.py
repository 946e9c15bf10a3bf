"""stockshift adapters layer."""
