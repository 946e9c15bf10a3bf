"""stockshift state layer."""
