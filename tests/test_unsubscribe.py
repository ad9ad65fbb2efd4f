"""One-click unsubscribe (RFC 8058): a signed link per user and kind of email; `POST` acts with
no sign-in, `GET` only shows the button."""

import pytest
from helpers import outbox
from itsdangerous import URLSafeSerializer
from mailing import deliver_when_due

from sit import notifications
from sit.auth import TOKEN_SALT, issue_token
from sit.extensions import db
from sit.models import User
from sit.unsubscribe import SALT, unsubscribe_url

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def preferences(user):
    db.session.expire_all()
    user = db.session.get(User, user.id)
    return {"assignment": user.notify_assignments, "digest": user.notify_digest}


def path(url):
    assert url.startswith("http://sit.test/unsubscribe/")
    return url.removeprefix("http://sit.test")


@pytest.mark.parametrize("kind", ["assignment", "digest"])
def test_one_click_post_turns_that_kind_off_without_sign_in(client, alice, kind):
    response = client.post(path(unsubscribe_url(alice.id, kind)), data=ONE_CLICK)
    assert response.status_code == 200
    assert "no longer gets" in response.get_data(as_text=True)
    other = "digest" if kind == "assignment" else "assignment"
    assert preferences(alice) == {kind: False, other: True}


def test_an_empty_post_works_too_and_again(client, alice):
    url = path(unsubscribe_url(alice.id, "digest"))
    assert client.post(url).status_code == 200
    assert client.post(url, data=ONE_CLICK).status_code == 200
    assert preferences(alice) == {"assignment": True, "digest": False}


@pytest.mark.parametrize("kind", ["assignment", "digest"])
def test_the_token_is_itsdangerous_url_safe_token(app, alice, kind):
    serializer = URLSafeSerializer(app.config["SECRET_KEY"], salt=SALT)
    token = serializer.dumps({"user": alice.id, "kind": kind})
    assert unsubscribe_url(alice.id, kind) == f"http://sit.test/unsubscribe/{token}"


def test_get_shows_a_button_and_changes_nothing(client, alice):
    url = path(unsubscribe_url(alice.id, "assignment"))
    for method in ("get", "head"):
        response = getattr(client, method)(url, headers=BROWSER)
        assert response.status_code == 200
        assert response.mimetype == "text/html"
    page = client.get(url).get_data(as_text=True)
    assert f'<form method="post" action="{url}">' in page
    assert "alice" in page and "assigned to you" in page
    assert preferences(alice) == {"assignment": True, "digest": True}


def test_a_deactivated_user_can_unsubscribe_too(client, alice):
    alice.change({"active": False})
    db.session.commit()
    assert client.post(path(unsubscribe_url(alice.id, "digest"))).status_code == 200
    assert preferences(alice)["digest"] is False


def forged(payload, salt=SALT, key="another installation's key"):
    return "/unsubscribe/" + URLSafeSerializer(key, salt=salt).dumps(payload)


@pytest.mark.parametrize(
    "url",
    [
        lambda app, alice: "/unsubscribe/garbage",
        lambda app, alice: path(unsubscribe_url(alice.id, "digest"))[:-3],
        lambda app, alice: forged({"user": alice.id, "kind": "digest"}),
        lambda app, alice: forged(
            {"user": alice.id, "kind": "digest"}, TOKEN_SALT, app.config["SECRET_KEY"]
        ),
        lambda app, alice: "/unsubscribe/" + issue_token(alice, 3600),
        lambda app, alice: forged(
            {"user": alice.id, "kind": "everything"}, SALT, app.config["SECRET_KEY"]
        ),
        lambda app, alice: forged({"user": 999, "kind": "digest"}, SALT, app.config["SECRET_KEY"]),
        lambda app, alice: forged({"user": "x", "kind": "digest"}, SALT, app.config["SECRET_KEY"]),
        lambda app, alice: forged([1], SALT, app.config["SECRET_KEY"]),
    ],
    ids=[
        "garbage",
        "cut-short",
        "other-key",
        "access-token-salt",
        "access-token",
        "unknown-kind",
        "no-such-user",
        "not-an-id",
        "not-claims",
    ],
)
def test_a_token_that_does_not_verify_is_404_and_changes_nothing(app, client, alice, url):
    target = url(app, alice)
    for method in ("get", "post"):
        response = getattr(client, method)(target)
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"
        assert "not valid" in response.json["detail"]
        page = getattr(client, method)(target, headers=BROWSER)
        assert (page.status_code, page.mimetype) == (404, "text/html")
        assert "not valid" in page.get_data(as_text=True)
    assert preferences(alice) == {"assignment": True, "digest": True}


def test_pages_may_post_their_form_to_sit_only(client, alice):
    page = client.get(path(unsubscribe_url(alice.id, "digest")))
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Content-Security-Policy"] == (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    missing = client.get("/unsubscribe/garbage")
    assert "form-action 'none'" in missing.headers["Content-Security-Policy"]


def test_the_link_in_a_received_email_turns_that_kind_off_with_one_post(
    app, client, mail_to_sink, new_issue, clock
):
    new_issue()
    assert deliver_when_due(app, clock) == 1
    (received,) = mail_to_sink.received
    url = received.message["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    assert client.post(path(url), data=ONE_CLICK).status_code == 200  # no sign-in, no token
    new_issue()
    notifications.queue_digests()
    assert deliver_when_due(app, clock) == 1
    assert mail_to_sink.received[-1].subject.startswith("Your SIT digest")
    assert [(email.kind, email.state) for email in outbox()] == [
        ("assignment", "sent"),
        ("assignment", "cancelled"),
        ("digest", "sent"),
    ]
