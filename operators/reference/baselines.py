"""Baseline transfer policies to compare stockshift against (pure functions on arrays).

`tie`: transshipment inventory equalization. At each review, move stock so that every site
of a SKU holds the same share of its weight (the simulator weighs a site by its replenishment
target), cheapest lanes first, from on-hand only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Move:
    from_index: int
    to_index: int
    qty: int


def tie_moves(
    stock: NDArray[np.int64],
    on_hand: NDArray[np.int64],
    weight: NDArray[np.float64],
    lane_cost: Mapping[tuple[int, int], float],
    min_qty: int,
) -> list[Move]:
    """Moves for one SKU that bring every site towards the same stock per unit of weight
    (with a demand rate for weight: the same days of supply). `stock` is what is evened
    (the simulator passes on hand and in transit); only `on_hand` can be sent."""
    weight = np.maximum(weight, 1e-6)
    per_weight = stock.sum() / weight.sum()
    target = per_weight * weight
    excess = np.minimum(np.floor(stock - target), on_hand).astype(int)
    shortage = np.floor(target - stock).astype(int)
    moves: list[Move] = []
    for receiver in np.argsort(-shortage):
        need = int(shortage[receiver])
        if need < min_qty:
            break
        senders = sorted(
            (lane_cost[(int(s), int(receiver))], int(s))
            for s in np.nonzero(excess >= min_qty)[0]
            if (int(s), int(receiver)) in lane_cost
        )
        for _, sender in senders:
            qty = min(need, int(excess[sender]))
            if qty < min_qty:
                continue
            moves.append(Move(sender, int(receiver), qty))
            excess[sender] -= qty
            need -= qty
            if need < min_qty:
                break
    return moves
