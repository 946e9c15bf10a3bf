"""stockshift flows layer."""
