"""Task groups whose single failure surfaces as itself, not as an ExceptionGroup.

The tracker runs background tasks (the group-commit writer, maintenance) in a
task group around the caller's ``async with`` block; a caller catching
``UnknownRequest`` around that block must see ``UnknownRequest``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """Like ``anyio.create_task_group()``, but a lone exception is raised unwrapped."""
    single: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        single = group.exceptions[0]
    if single is not None:
        raise single  # outside the except block: no implicit chaining to the group
