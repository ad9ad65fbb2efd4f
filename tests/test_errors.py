"""One error shape: problem+json for every error, and no stack trace ever reaches a client."""

from sit import create_app
from sit.extensions import db


def test_unknown_path_is_a_problem(client):
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert set(response.json) == {"type", "title", "status", "detail"}
    assert response.json["title"] == "Not Found"


def test_unhandled_exception_is_500_without_a_trace(boom):
    assert boom.status_code == 500
    assert boom.mimetype == "application/problem+json"
    body = boom.get_data(as_text=True)
    assert "secret internals" not in body and "Traceback" not in body


def test_database_unreachable_is_503_and_healthz_says_so(app, tmp_path, as_alice):
    unreachable = f"sqlite:///{tmp_path}/missing/dir/sit.db"
    broken = create_app(
        {"SQLALCHEMY_DATABASE_URI": unreachable, "SECRET_KEY": app.config["SECRET_KEY"]}
    )
    client = broken.test_client()
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json == {"status": "unavailable", "database": "unavailable", "delivery": None}
    response = client.get("/api/", headers=as_alice)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert "Retry-After" in response.headers


def test_a_database_not_migrated_yet_is_503_saying_so(empty_database, tmp_path, monkeypatch):
    """Missing tables are an OperationalError on SQLite, a ProgrammingError on PostgreSQL."""
    monkeypatch.setenv("SIT_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database, "SECRET_KEY": "x"})
    response = app.test_client().post("/get-token/", data={"username": "a", "password": "b"})
    with app.app_context():
        db.engine.dispose()
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["detail"] == "The database is not migrated yet; run `flask db upgrade`."
    assert response.headers["Retry-After"] == "5"
