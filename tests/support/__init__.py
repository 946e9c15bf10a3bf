"""Helpers the tests share: event builders, a small network, the engine run over a list."""
