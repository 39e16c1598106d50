"""The JSON API under /api/ (OpenAPI document at /api/openapi.json).

Session authentication with Django's CSRF rules: GET /api/csrf sets the `csrftoken` cookie and
every unsafe request sends it back as `X-CSRFToken`. Errors are JSON: {"detail": ..., "errors":
{field: [messages]}} with a 4xx status.
"""

import logging
from datetime import datetime
from typing import Annotated

from django.contrib.auth import authenticate, login, logout
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import File, Form, NinjaAPI, Path, Schema, Status
from ninja.errors import HttpError, ValidationError
from ninja.files import UploadedFile
from ninja.security import django_auth
from ninja.utils import check_csrf
from pydantic import Field

from offload.models import Effect

from . import forms, services
from .limits import limited
from .models import Document, LoginActivity
from .security import WRONG_PASSWORD_TO_CLOSE, close_own_account, lockout_response
from .selectors import profile_of

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="Signal offload API",
    version="1.0",
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url="/docs",
)

DocumentId = Annotated[int, Path(ge=1, le=2**63 - 1)]
# What a share promises: the email goes after the commit, and only if the document is still there.
SHARE_ACCEPTED = "The recipient will be emailed, unless the document is deleted before it is sent."


class Error(Schema):
    detail: str
    errors: dict[str, list[str]] = {}


class SignUpIn(Schema):
    username: str = Field(max_length=150)
    email: str = Field(max_length=254)
    password: str = Field(max_length=4096)


class Credentials(Schema):
    username: str = Field(max_length=150)
    password: str = Field(max_length=4096)


class UserOut(Schema):
    id: int
    username: str
    email: str


class ProfileOut(Schema):
    document_count: int
    storage_bytes: int
    login_count: int
    last_login_at: datetime | None
    last_login_ip: str | None


class MeOut(UserOut):
    profile: ProfileOut


class DocumentOut(Schema):
    id: int
    title: str
    size: int
    file: str
    url: str

    @staticmethod
    def resolve_file(document: Document) -> str:
        return document.file.name

    @staticmethod
    def resolve_url(document: Document) -> str:
        return reverse("download", args=[document.pk])


class EmailIn(Schema):
    email: str = Field(max_length=254)


class PasswordIn(Schema):
    password: str = Field(max_length=4096)


class LoginOut(Schema):
    at: datetime
    ip: str | None
    user_agent: str
    new_device: bool
    ended_at: datetime | None


class ShareIn(Schema):
    email: str = Field(max_length=254)


class Accepted(Schema):
    detail: str


class EffectOut(Schema):
    id: int
    task: str
    status: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None


def invalid(form, status: int = 400) -> Status:
    errors = {
        field: [e["message"] for e in errs] for field, errs in form.errors.get_json_data().items()
    }
    return Status(status, {"detail": "Invalid input.", "errors": errors})


def require_csrf(request: HttpRequest) -> None:
    """CSRF for the endpoints open to anonymous users (sign-up, sign-in)."""
    if check_csrf(request):
        raise HttpError(
            403, "CSRF token missing or incorrect: GET /api/csrf, then send X-CSRFToken."
        )


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        names = [str(part) for part in error.get("loc", ()) if isinstance(part, str)]
        field = names[-1] if names and names[-1] not in ("body", "payload") else "body"
        errors.setdefault(field, []).append(error.get("msg", "Invalid value."))
    return api.create_response(request, {"detail": "Invalid input.", "errors": errors}, status=400)


@api.exception_handler(MultiPartParserError)
@api.exception_handler(BadRequest)
@api.exception_handler(SuspiciousOperation)
def malformed_request(request, exc: Exception):
    # Found by the fuzzer: a multipart Content-Type without a valid body was a 500.
    return api.create_response(request, {"detail": "Malformed request body."}, status=400)


@api.exception_handler(RequestDataTooBig)
def request_too_big(request, exc: Exception):
    return api.create_response(request, {"detail": "Request body too large."}, status=413)


@api.exception_handler(Exception)
def unexpected_error(request, exc: Exception):
    # Never a traceback to the client, whatever DEBUG says; the log has the details.
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return api.create_response(request, {"detail": "Internal error."}, status=500)


@api.get("/csrf", response={200: dict}, summary="Set the csrftoken cookie")
def csrf(request):
    return {"csrftoken": get_token(request)}


@api.post("/users", response={201: UserOut, 400: Error, 403: Error, 409: Error, 429: Error})
@limited("sign_up")
def create_user(request, payload: SignUpIn):
    require_csrf(request)
    form = forms.SignUpForm(payload.dict())
    if not form.is_valid():
        return invalid(form)
    try:
        user = services.sign_up(**form.cleaned_data)
    except services.UsernameTaken:
        taken = "That username is taken."
        return Status(409, {"detail": taken, "errors": {"username": [taken]}})
    return Status(201, user)


@api.post("/session", response={200: UserOut, 401: Error, 403: Error, 429: Error})
def create_session(request, payload: Credentials):
    require_csrf(request)
    # authenticate() sends user_login_failed on a bad password, login() sends user_logged_in.
    # A locked-out client is refused by django-axes before the password is checked.
    user = authenticate(request, username=payload.username, password=payload.password)
    if getattr(request, "axes_locked_out", False):
        return lockout_response(request)
    if user is None:
        return Status(401, {"detail": "Wrong username or password."})
    login(request, user)
    return Status(200, user)


@api.delete("/session", response={204: None}, auth=django_auth)
def delete_session(request):
    logout(request)
    return Status(204, None)


@api.get("/me", response=MeOut, auth=django_auth)
def me(request):
    user = request.auth
    return {
        "id": user.pk,
        "username": user.username,
        "email": user.email,
        "profile": profile_of(user),
    }


@api.patch("/me", response={200: UserOut, 400: Error, 409: Error, 429: Error}, auth=django_auth)
@limited("email_change")
def change_email(request, payload: EmailIn):
    form = forms.EmailForm(payload.dict())
    if not form.is_valid():
        return invalid(form)
    try:
        return Status(200, services.change_email(request.auth, form.cleaned_data["email"]))
    except services.EmailTaken as taken:
        return Status(409, {"detail": str(taken), "errors": {"email": [str(taken)]}})


@api.delete("/me", response={204: None, 400: Error, 403: Error, 429: Error}, auth=django_auth)
def close_account(request, payload: PasswordIn):
    if close_own_account(request, payload.password):
        return Status(204, None)
    if getattr(request, "axes_locked_out", False):
        return lockout_response(request)
    wrong = WRONG_PASSWORD_TO_CLOSE
    return Status(403, {"detail": wrong, "errors": {"password": [wrong]}})


@api.get("/me/logins", response=list[LoginOut], auth=django_auth)
def my_logins(request, limit: Annotated[int, Field(ge=1, le=500)] = 100):
    return LoginActivity.objects.filter(user=request.auth).order_by("-at", "-pk")[:limit]


@api.get("/me/effects", response=list[EffectOut], auth=django_auth)
def my_effects(request, limit: Annotated[int, Field(ge=1, le=500)] = 100):
    return Effect.objects.filter(user=request.auth).order_by("-created_at", "-pk")[:limit]


@api.get("/documents", response=list[DocumentOut], auth=django_auth)
def list_documents(request):
    return Document.objects.filter(owner=request.auth)


@api.post("/documents", response={201: DocumentOut, 400: Error, 413: Error}, auth=django_auth)
def upload_document(request, title: Form[str], file: File[UploadedFile]):
    form = forms.DocumentForm(request.POST, request.FILES)
    if not form.is_valid():
        return invalid(form, status=upload_error_status(form))
    return Status(201, services.create_document(request.auth, **form.cleaned_data))


@api.post(
    "/documents/{document_id}/file",
    response={200: DocumentOut, 400: Error, 404: Error, 413: Error},
    auth=django_auth,
)
def replace_document_file(request, document_id: DocumentId, file: File[UploadedFile]):
    document = get_object_or_404(Document, pk=document_id, owner=request.auth)
    form = forms.ReplaceFileForm(request.POST, request.FILES)
    if not form.is_valid():
        return invalid(form, status=upload_error_status(form))
    return Status(200, services.replace_file(document, form.cleaned_data["file"]))


@api.delete("/documents/{document_id}", response={204: None, 404: Error}, auth=django_auth)
def delete_document(request, document_id: DocumentId):
    services.delete_document(get_object_or_404(Document, pk=document_id, owner=request.auth))
    return Status(204, None)


@api.post(
    "/documents/{document_id}/share",
    response={202: Accepted, 400: Error, 404: Error, 429: Error},
    auth=django_auth,
)
@limited("share")
def share_document(request, document_id: DocumentId, payload: ShareIn):
    document = get_object_or_404(Document, pk=document_id, owner=request.auth)
    form = forms.ShareForm(payload.dict())
    if not form.is_valid():
        return invalid(form)
    services.share_document(document, form.cleaned_data["email"], request.auth)
    return Status(202, {"detail": SHARE_ACCEPTED})


def upload_error_status(form) -> int:
    return 413 if form.has_error("file", code="too_large") else 400
