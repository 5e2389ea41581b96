"""What every benchmark measures the same way: calls/s and per-call latencies under concurrency."""

from __future__ import annotations

import asyncio
import statistics
import time


async def measure(call, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Run `await call(i)` for i in range(n) on `concurrency` workers: (calls per second, latencies in s)."""
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            t0 = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), latencies


def pct(values: list[float], q: int) -> float:
    """The q-th percentile in milliseconds."""
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else values[0] * 1000
