"""``offload.middleware.healthz_first``: first in MIDDLEWARE, it answers ``GET /healthz``
before anything else reads the request. A container's or an orchestrator's probe asks by
whatever address it reaches the process at (``127.0.0.1``, a pod IP), which ALLOWED_HOSTS
rightly refuses for every other page (400 DisallowedHost); the liveness answer names no host
and says nothing but "ok", so it is safe to give to any Host."""

from collections.abc import Callable
from functools import cache

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from .views import healthz

Handler = Callable[[HttpRequest], HttpResponse]


def healthz_first(get_response: Handler) -> Handler:
    def middleware(request: HttpRequest) -> HttpResponse:
        if request.path == _healthz_path() and request.method in ("GET", "HEAD"):
            return healthz(request)
        return get_response(request)

    return middleware


@cache
def _healthz_path() -> str:
    return reverse("healthz")
