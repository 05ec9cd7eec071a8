"""Projections: views of the event log, applied in the append transaction.

Each module owns one table; ``state.Projector`` applies events to all of
them and is the store's hook; ``replay`` rebuilds them from the log.
"""

from projections.replay import clear, replay
from projections.state import Projector, State, table_names

__all__ = ["Projector", "State", "clear", "replay", "table_names"]
