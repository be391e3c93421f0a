"""When a background worker's failed rounds are worth a log line: the rule the index maintainer
and the app-data purger share."""

from __future__ import annotations

import time
from collections.abc import Callable

# A worker whose rounds keep failing says so again at most this often (the first failure of a
# streak at once). Every round was a WARNING before: a purger retrying each minute through a day
# of a full disk wrote 1,440 of them, and rotated everything else out of an app's log.
FAILURE_LOG_EVERY_S = 600.0


class FailureStreak:
    """Count a worker's failed rounds in a row and say which ones to log.

    ``failed()`` is true for the first failure of a streak and then at most every ``every``
    seconds; ``succeeded()`` ends the streak and gives its length, so the worker can log its
    recovery (a streak that was logged should be seen to end). ``count`` is the streak so far.
    """

    def __init__(
        self,
        *,
        every: float = FAILURE_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count = 0
        self._every = every
        self._clock = clock
        self._logged = float("-inf")

    def failed(self) -> bool:
        """Count one failed round; return whether to log it."""
        self.count += 1
        now = self._clock()
        if self.count == 1 or now - self._logged >= self._every:
            self._logged = now
            return True
        return False

    def succeeded(self) -> int:
        """End the streak; return how many rounds failed in it (0: there was none to log)."""
        ended, self.count = self.count, 0
        self._logged = float("-inf")
        return ended
