"""Django's WSGI handler driven in-process the way a WSGI server drives it.

``post()`` returns once the response body has been written, as a server has sent it to the
client; the caller then closes the response, as the server does after, which sends Django's
request_finished (where offload publishes what the request committed). Used by the benchmarks
and by the test of the publish after the response.
"""

from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponseBase
from django.test import RequestFactory


class InProcessServer:
    def __init__(self) -> None:
        self.handler = WSGIHandler()
        self.factory = RequestFactory()
        # A browser's CSRF cookie and header, as the API asks of unsafe requests.
        response = self.handler(self.factory.get("/api/csrf").environ, lambda *args: None)
        response.close()
        self.csrf = response.cookies["csrftoken"].value

    def post(self, path: str, body: str) -> tuple[int, HttpResponseBase]:
        """POST JSON; returns the status and the response, its body written and not closed."""
        environ = self.factory.post(
            path, body, content_type="application/json",
            HTTP_X_CSRFTOKEN=self.csrf, HTTP_COOKIE=f"csrftoken={self.csrf}",
        ).environ  # fmt: skip
        statuses = []
        response = self.handler(
            environ, lambda status, headers, exc_info=None: statuses.append(status)
        )
        for _ in response:  # written to the client
            pass
        return int(statuses[0][:3]), response
