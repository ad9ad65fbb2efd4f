"""The one signer (itsdangerous, keyed by `SECRET_KEY`) of every token SIT hands out: access
tokens, unsubscribe links and listing cursors, each under a salt of its own, so that none ever
passes for another."""

import functools

from flask import current_app
from itsdangerous import URLSafeSerializer


@functools.cache
def _serializer(secret_key: str, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=salt)


def serializer(salt: str) -> URLSafeSerializer:
    """This app's signer for one kind of token, built once (every request and email uses one)."""
    return _serializer(current_app.config["SECRET_KEY"], salt)
