"""Lab commands: bench, simulate, signal-bench, soak, reliability, compare and the demo.
The production flow never imports them."""
