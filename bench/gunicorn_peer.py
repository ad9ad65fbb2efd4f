"""SIT's gunicorn settings (`gunicorn.conf.py`) without its SIT-only hooks, so the bare app and
the DRF peer are served exactly as SIT is: same worker class, timeouts and access log."""

import runpy
from pathlib import Path

_sit = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update(
    {
        name: value
        for name, value in _sit.items()
        if not name.startswith("_") and isinstance(value, str | int | float | bool)
    }
)
