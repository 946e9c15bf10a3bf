"""The Erlang loss formula: the closed form our simulator must reproduce."""

from __future__ import annotations


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability B(k, a) by the stable recursion B(k) = aB(k-1) / (k + aB(k-1))."""
    if servers < 0 or load < 0:
        raise ValueError("servers and load must be non-negative")
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    return blocking


def fill_without_transfers(base_stock: int, rate: float, lead: float) -> float:
    """One site, Poisson demand, one-for-one replenishment with lead time, lost sales."""
    return 1.0 - erlang_b(base_stock, rate * lead)


def fill_with_complete_pooling(sites: int, base_stock: int, rate: float, lead: float) -> float:
    """N identical sites pooled instantly behave as one site with N·S units and N·λ demand."""
    return 1.0 - erlang_b(sites * base_stock, sites * rate * lead)
