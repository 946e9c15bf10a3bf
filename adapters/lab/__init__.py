"""The lab's I/O: the simulated network, fault injection, dev services, the harnesses
that drive the real process. Not part of the production image; `pip install stockshift[lab]`
brings what it needs beyond the core."""
