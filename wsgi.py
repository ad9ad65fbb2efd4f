"""The WSGI entry point gunicorn serves: `gunicorn -c gunicorn.conf.py wsgi:app`.

Its app has no `flask db` (see `create_app`): migrate with the `flask` command, whose app is
`sit` (`.flaskenv`), never `--app wsgi`.
"""

from sit import create_app

app = create_app(migrations=False)
