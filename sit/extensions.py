"""Extensions, created bare here and attached to the app in `create_app`."""

from apiflask import HTTPTokenAuth
from flask import request
from flask_mail import Mail
from flask_migrate import Migrate
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


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
mail = Mail()
token_auth = TokenAuth(scheme="Bearer", realm="SIT", description="An access token from /get-token/")
