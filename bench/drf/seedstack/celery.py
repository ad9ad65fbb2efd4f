"""The Celery app, as Django projects declare it: `celery -A seedstack worker` finds it here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedstack.settings")
app = Celery("seedstack", include=["seedstack.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
