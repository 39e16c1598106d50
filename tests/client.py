"""One client of the JSON API for every test, following Django's CSRF rules as a browser does:
``GET /api/csrf`` for the ``csrftoken`` cookie, then ``X-CSRFToken`` on every unsafe request
(the token changes at sign-in, so it is read from the cookie each time).

``ApiClient()`` talks to the app in this process through Django's test client (CSRF enforced);
``ApiClient(url)`` talks HTTP to a running server (pytest-django's ``live_server``, or a
gunicorn a test started), through a ``requests`` session.
"""

import json as jsonlib
from typing import Any

import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.factories import PASSWORD

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ApiClient:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        user_agent: str = "ApiClient/1.0",
        remote_addr: str = "127.0.0.1",
    ):
        self.base_url = base_url
        self.http: requests.Session | Client
        if base_url:
            self.http = requests.Session()
            self.http.headers["User-Agent"] = user_agent
        else:
            self.http = Client(
                enforce_csrf_checks=True, REMOTE_ADDR=remote_addr, HTTP_USER_AGENT=user_agent
            )
        response = self.get("/api/csrf")
        assert response.status_code == 200, response.content

    @property
    def csrf_token(self) -> str:
        if isinstance(self.http, requests.Session):
            return self.http.cookies.get("csrftoken", "")
        cookie = self.http.cookies.get("csrftoken")
        return cookie.value if cookie else ""

    @property
    def csrf_header(self) -> dict[str, str]:
        """For a request sent through ``self.http`` directly (a malformed body, say)."""
        return {"X-CSRFToken": self.csrf_token}

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: dict | None = None,
        files: dict[str, SimpleUploadedFile] | None = None,
        params: dict | None = None,
        headers: dict | None = None,
    ):
        """``json`` for a JSON body; ``data`` and ``files`` for a multipart form."""
        method = method.upper()
        headers = dict(headers or {})
        if method not in SAFE_METHODS:
            headers.update(self.csrf_header)
        if isinstance(self.http, requests.Session):
            files = {name: (f.name, f.read(), f.content_type) for name, f in (files or {}).items()}
            return self.http.request(
                method, self.base_url + path, json=json, data=data, files=files or None,
                params=params, headers=headers, timeout=10,
            )  # fmt: skip
        send = getattr(self.http, method.lower())
        if method in SAFE_METHODS:
            return send(path, params, headers=headers)
        if files or data:
            return send(path, {**(data or {}), **(files or {})}, headers=headers)
        body = "" if json is None else jsonlib.dumps(json)
        return send(path, body, content_type="application/json", headers=headers)

    def get(self, path: str, **params):
        return self.request("GET", path, params=params or None)

    def post(self, path: str, json: Any = None, **kwargs):
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs):
        return self.request("PATCH", path, json=json, **kwargs)

    def delete(self, path: str, json: Any = None, **kwargs):
        return self.request("DELETE", path, json=json, **kwargs)

    def upload(self, path: str, form: dict):
        """A multipart POST: the SimpleUploadedFile values are files, the others fields."""
        files = {k: v for k, v in form.items() if isinstance(v, SimpleUploadedFile)}
        data = {k: v for k, v in form.items() if k not in files}
        return self.request("POST", path, data=data, files=files)

    # --- what a user does ------------------------------------------------------------------

    def sign_up(self, username: str, password: str = PASSWORD, email: str | None = None):
        email = email or f"{username}@example.com"
        body = {"username": username, "email": email, "password": password}
        return self.post("/api/users", body)

    def sign_in(self, username: str, password: str = PASSWORD, headers: dict | None = None):
        body = {"username": username, "password": password}
        return self.post("/api/session", body, headers=headers)

    def effects(self, task: str | None = None) -> list[dict]:
        """This user's effects, newest first (``GET /api/me/effects``)."""
        effects = self.get("/api/me/effects").json()
        return [e for e in effects if task in (None, e["task"])]

    def all_done(self) -> bool:
        effects = self.effects()
        return bool(effects) and all(e["status"] == "done" for e in effects)


def upload_file(content: bytes = b"hello world", name: str = "hello.txt") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="text/plain")
