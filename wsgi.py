"""The WSGI entry point gunicorn serves: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from sit import create_app

app = create_app()
