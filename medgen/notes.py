"""What the library tells its user along the way (a mixed folder resampled, a raw table logged,
a cache that may not fit in memory): records of the ``medgen`` logger at WARNING level, which
Python writes to stderr as ``medgen: ...`` when the application has configured no logging, as
the command line has not. An application that configures logging routes or silences them
(``logging.getLogger("medgen")``); library code never prints.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("medgen")


def note(message: str) -> None:
    """Tell the user ``message`` (one line, without the ``medgen:`` prefix)."""
    logger.warning("medgen: %s", message)
