"""Settings of the seed's stack: the DRF peer's, with its issues' views scheduling an assignment
email through Celery on Redis (`BENCH_REDIS_URL`, keys under `BENCH_REDIS_PREFIX`), sent to the
benchmark's SMTP sink (`BENCH_SMTP_PORT`) after `ASSIGNMENT_DELAY` seconds."""

import os

from drfpeer.settings import *  # noqa: F403 (the DRF peer's settings, then what differs)
from drfpeer.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "seedstack"]
ISSUE_VIEWSET = "seedstack.views.IssueViewSet"
ASSIGNMENT_DELAY = int(os.environ.get("BENCH_ASSIGNMENT_DELAY", "720"))  # the seed's 12 minutes

CELERY_BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Each run's queues and its reserved (unacked) tasks under keys of its own, removed afterwards.
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": os.environ.get("BENCH_REDIS_PREFIX", "")}
CELERY_TASK_IGNORE_RESULT = True  # no result backend: nothing waits for a sent email

EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("BENCH_SMTP_PORT", "25"))
DEFAULT_FROM_EMAIL = "sit@example.com"
