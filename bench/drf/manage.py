"""The DRF peer's manage.py: `python bench/drf/manage.py migrate` (BENCH_DRF_DB names the db)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "drfpeer.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
