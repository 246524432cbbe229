"""Send a stage's log messages and progress bars to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from cellconcepts.files import PathLike


@contextlib.contextmanager
def log_to_file(path: PathLike | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Route `logging` and stderr (tqdm bars, warnings) into `path` for the duration.

    Exceptions are logged with their traceback before being re-raised, so a failed job's log
    says why it failed.
    """
    root = logging.getLogger()
    if path is None:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        yield root
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(True)
        try:
            with contextlib.redirect_stderr(stream):
                yield root
        except BaseException:
            root.exception("stage failed")
            raise
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.setLevel(old_level)
