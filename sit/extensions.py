"""Extensions, created bare here and attached to the app in `create_app`.

Flask-Migrate is the exception: `create_app` imports and attaches it, and only for an app that
has a command line (it brings alembic, ~10 MiB a gunicorn worker never uses).
"""

from apiflask import HTTPTokenAuth
from flask import request
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from werkzeug.datastructures import Authorization


class Base(DeclarativeBase):
    pass


class TokenAuth(HTTPTokenAuth):
    """`Authorization: Bearer <token>`, and the original version's `Token <token>` too."""

    SCHEMES = ("bearer", "token")

    def get_auth(self) -> Authorization | None:
        auth = request.authorization
        if auth is None or auth.type.lower() not in self.SCHEMES or not auth.token:
            return None
        return auth


# A session lives for one request (or one job run, or one command). What it wrote it knows:
# nothing is reloaded after a commit just to answer with it.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
mail = Mail()
token_auth = TokenAuth(scheme="Bearer", realm="SIT", description="An access token from /get-token/")
