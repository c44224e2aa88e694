"""Peak resident memory of this process while a block runs."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """Samples RSS every ``interval`` seconds in a thread; ``peak_mb`` after the block."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0

    def __enter__(self) -> PeakRSS:
        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak / 1e6
