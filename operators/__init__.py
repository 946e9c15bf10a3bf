"""stockshift operators layer."""
