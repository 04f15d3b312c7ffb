"""API tokens: HMAC-only storage, bearer-only API, revocation, expiry, last use."""
from __future__ import annotations

import hashlib
import hmac
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.auth import AuthError, create_token, revoke_token
from inventory.db import make_engine, utcnow, write_session
from inventory.models import ApiToken
from tests.conftest import TEST_SECRET, bearer, create_api_token, create_user_and_login, make_test_app
from tests.security.conftest import add_probe_routes


def _token_row(app, plaintext: str) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    with app.app_context():
        row = get_session().scalar(sa.select(ApiToken).where(ApiToken.prefix == plaintext[:12]))
        return SimpleNamespace(id=row.id, token_hash=row.token_hash, last_used_at=row.last_used_at)


def _all_text_in_database(url: str) -> str:
    """Every value of every column of every table, as one string."""
    engine = make_engine(url)
    try:
        chunks = []
        with engine.connect() as conn:
            for table in sa.inspect(engine).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    chunks.append(repr(tuple(row)))
        return "\n".join(chunks)
    finally:
        engine.dispose()


def test_only_an_hmac_of_the_token_is_stored(probe_app, sqlite_url):
    plaintext = create_api_token(probe_app, "read")
    row = _token_row(probe_app, plaintext)
    key = hashlib.sha256(b"planb-token-hmac:" + TEST_SECRET.encode()).digest()
    assert row.token_hash == hmac.new(key, plaintext.encode(), hashlib.sha256).hexdigest()
    assert plaintext not in _all_text_in_database(sqlite_url)
    assert plaintext[12:] not in _all_text_in_database(sqlite_url)


def test_token_hmac_key_comes_from_the_environment_setting(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "i", TOKEN_HMAC_KEY="another-key")
    add_probe_routes(app)
    plaintext = create_api_token(app, "read")
    assert _token_row(app, plaintext).token_hash == hmac.new(
        b"another-key", plaintext.encode(), hashlib.sha256).hexdigest()
    client = app.test_client()
    assert client.get("/api/v1/_probe/read", headers=bearer(plaintext)).status_code == 200
    # The same database served with a different key cannot use the token.
    other = make_test_app(sqlite_url, tmp_path / "j", TOKEN_HMAC_KEY="rotated-key")
    add_probe_routes(other)
    assert other.test_client().get("/api/v1/_probe/read", headers=bearer(plaintext)).status_code == 401


def test_read_token_reads_write_token_writes_neither_is_admin(probe_app):
    client = probe_app.test_client()
    read, write = create_api_token(probe_app, "read"), create_api_token(probe_app, "write")
    assert client.get("/api/v1/_probe/read", headers=bearer(read)).status_code == 200
    response = client.post("/api/v1/_probe/write", headers=bearer(read))
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert client.post("/api/v1/_probe/write", headers=bearer(write)).status_code == 200
    assert client.get("/api/v1/_probe/admin", headers=bearer(write)).status_code == 403


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer planb_not-a-real-token",
    "Bearer " + "x" * 5000, "Token planb_x",
])
def test_missing_or_bad_credentials_get_401_json(probe_app, header):
    headers = {"Authorization": header} if header is not None else {}
    response = probe_app.test_client().get("/api/v1/_probe/read", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_never_accepts_a_session_cookie_alone(probe_app):
    client = probe_app.test_client()
    create_user_and_login(probe_app, client, "admin")
    assert client.get("/_probe/admin").status_code == 200  # the cookie works on pages
    assert client.get("/api/v1/_probe/read").status_code == 401
    assert client.post("/api/v1/_probe/write").status_code == 401


def test_bearer_token_does_not_open_web_pages(probe_app):
    token = create_api_token(probe_app, "write")
    response = probe_app.test_client().get("/_probe/read", headers=bearer(token))
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_revoked_token_is_refused_at_once(probe_app):
    client = probe_app.test_client()
    plaintext = create_api_token(probe_app, "write")
    assert client.get("/api/v1/_probe/read", headers=bearer(plaintext)).status_code == 200
    with probe_app.app_context():
        db = get_session()
        revoke_token(db, _token_row(probe_app, plaintext).id, actor="admin1")
        db.commit()
    assert client.get("/api/v1/_probe/read", headers=bearer(plaintext)).status_code == 401


def test_expired_token_is_refused(probe_app):
    client = probe_app.test_client()
    plaintext = create_api_token(probe_app, "read", expires_in_days=1)
    assert client.get("/api/v1/_probe/read", headers=bearer(plaintext)).status_code == 200
    with probe_app.app_context():
        db = get_session()
        row = db.get(ApiToken, _token_row(probe_app, plaintext).id)
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.commit()
    assert client.get("/api/v1/_probe/read", headers=bearer(plaintext)).status_code == 401


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "", "role": "read"}, "name"),
    ({"name": "x", "role": "admin"}, "role"),
    ({"name": "x", "role": "read", "expires_in_days": -1}, "expiry"),
])
def test_create_token_validates(probe_app, kwargs, message):
    with probe_app.app_context(), pytest.raises(AuthError, match=message):
        create_token(get_session(), **kwargs)


def test_last_used_is_recorded_at_most_once_a_minute(probe_app):
    client = probe_app.test_client()
    plaintext = create_api_token(probe_app, "read")
    assert _token_row(probe_app, plaintext).last_used_at is None
    client.get("/api/v1/_probe/read", headers=bearer(plaintext))
    first = _token_row(probe_app, plaintext).last_used_at
    assert first is not None and utcnow() - first < timedelta(seconds=30)
    client.get("/api/v1/_probe/read", headers=bearer(plaintext))
    assert _token_row(probe_app, plaintext).last_used_at == first


def test_write_token_post_does_not_wait_on_its_own_last_used_update(probe_app):
    """A POST's request session holds the SQLite write lock; recording the token's use
    must not queue behind it (it used to wait the whole busy timeout)."""
    plaintext = create_api_token(probe_app, "write")
    started = time.monotonic()
    response = probe_app.test_client().post("/api/v1/_probe/write", headers=bearer(plaintext))
    assert response.status_code == 200
    assert time.monotonic() - started < 5
    assert _token_row(probe_app, plaintext).last_used_at is not None


def test_token_reads_do_not_queue_behind_a_long_writer(probe_app, sqlite_url):
    """While a collector holds the SQLite write lock, API reads still answer promptly
    (the last-used timestamp is skipped rather than waited for)."""
    plaintext = create_api_token(probe_app, "read")
    engine = make_engine(sqlite_url)
    holding, release = threading.Event(), threading.Event()

    def long_writer() -> None:
        with write_session(engine) as db:
            db.execute(sa.text("UPDATE users SET active = active"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=long_writer)
    thread.start()
    try:
        assert holding.wait(5)
        started = time.monotonic()
        response = probe_app.test_client().get("/api/v1/_probe/read", headers=bearer(plaintext))
        elapsed = time.monotonic() - started
    finally:
        release.set()
        thread.join()
        engine.dispose()
    assert response.status_code == 200
    assert elapsed < 3
