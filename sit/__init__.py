"""SIT, a self-hosted issue tracker served as a REST API."""

import logging
import os
from pathlib import Path
from typing import Any

from apiflask import APIFlask
from werkzeug.middleware.proxy_fix import ProxyFix

from sit import (
    auth,
    cli,
    comments,
    config,
    docs,
    errors,
    events,
    health,
    issues,
    labels,
    metrics,
    scheduler,
    search,
    security,
    sqlite,
    unsubscribe,
    users,
    watching,
    web,
)
from sit.extensions import db
from sit.extensions import mail as flask_mail  # not to shadow the module sit.mail
from sit.schemas import Request, check_body_type
from sit.webhooks import views as webhooks

PROJECT_INSTANCE = Path(__file__).resolve().parent.parent / "instance"


def create_app(test_config: dict[str, Any] | None = None, *, migrations: bool = True) -> APIFlask:
    """Build the app: configuration, extensions, scheduler, blueprints, error handlers, CLI.

    The scheduler is attached, not started: a serving process stands by to run its jobs
    (`gunicorn.conf.py`), any other process only adds jobs.

    `migrations=False` leaves out `flask db`: Flask-Migrate and alembic, ~10 MiB in every
    gunicorn worker that never runs a command (`wsgi.py`). The `flask` command's app
    (`.flaskenv`: `sit`, so `create_app()`) and every other caller keep it.
    """
    instance = os.environ.get("SIT_INSTANCE_PATH") or PROJECT_INSTANCE
    app = APIFlask(
        __name__,
        instance_relative_config=True,
        title="SIT",
        version="1.0",
        instance_path=str(Path(instance).resolve()),
        spec_path="/openapi.json",
        docs_path="/docs",
        static_folder=None,
    )
    app.request_class = Request
    app.json.sort_keys = False  # fields in the order the schemas declare them
    app.json.ensure_ascii = False  # UTF-8, as pydantic-core writes a page of issues
    config.load(app, test_config)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = sqlite.engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"]
    )
    app.url_map.strict_slashes = False
    app.logger.setLevel(logging.INFO)  # "sit.*" loggers: emails sent, runner elected

    db.init_app(app)
    if migrations:
        from flask_migrate import Migrate  # here, not at the top: see the docstring

        Migrate(app, db)
    flask_mail.init_app(app)
    with app.app_context():
        sqlite.tune(db.engine)
        search.init_engine(db.engine)
        scheduler.init_app(app)

    metrics.init_app(app)  # first: its timer starts before any other hook
    errors.init_app(app)
    docs.init_app(app)
    security.init_app(app)
    app.before_request(check_body_type)

    app.register_blueprint(auth.bp)
    app.register_blueprint(issues.bp)
    app.register_blueprint(comments.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(labels.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(watching.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(unsubscribe.bp)
    app.register_blueprint(webhooks.bp)
    web.init_app(app)
    if app.config["PROXY_FIX"]:  # the client's address and scheme, as the proxies in front say
        app.wsgi_app = ProxyFix(app.wsgi_app, **app.config["PROXY_FIX"])  # type: ignore[method-assign]
    cli.init_app(app)
    return app
