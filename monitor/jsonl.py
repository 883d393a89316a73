"""JSON-lines files of the shared models: what ``monitor record`` writes and ``replay`` reads.

One model per line, serialised by pydantic, so a file is the same vocabulary MQTT and InfluxDB
carry. Writing happens in a worker thread in batches, never on the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from pydantic import BaseModel

__all__ = ["JsonlWriter"]


class JsonlWriter:
    """Appends models to a file; ``put`` never blocks and nothing queued is lost on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._file: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None

    def put(self, model: BaseModel) -> None:
        """Queue one model for writing (serialised now, so later mutation cannot leak in)."""
        self._queue.put_nowait(model.model_dump_json() + "\n")

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = await asyncio.to_thread(self.path.open, "a", encoding="utf-8")
        self._task = asyncio.create_task(self._write_loop(), name=f"jsonl[{self.path.name}]")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._queue.put_nowait(None)
        if self._task is not None:
            await self._task
        if self._file is not None:
            await asyncio.to_thread(self._file.close)

    async def _write_loop(self) -> None:
        """Drain the queue in batches until the closing sentinel, then return."""
        assert self._file is not None
        while True:
            lines = [await self._queue.get()]
            while not self._queue.empty():
                lines.append(self._queue.get_nowait())
            text = "".join(line for line in lines if line is not None)
            if text:
                await asyncio.to_thread(self._write, self._file, text)
                self.written += sum(line is not None for line in lines)
            if None in lines:
                return

    @staticmethod
    def _write(file: IO[str], text: str) -> None:
        file.write(text)
        file.flush()
