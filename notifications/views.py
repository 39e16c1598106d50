"""HTML pages: sign up, documents (upload, download, replace, delete, share), account (change
the email address, close the account) and activity.

Sign-in and sign-out are Django's own auth views (see project/urls.py), so the real
user_logged_in / user_login_failed signals fire.
"""

import hashlib
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponse, HttpResponseNotModified
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_http_methods, require_POST

from offload.models import Effect

from . import forms, services
from .limits import limited
from .models import SHARE_LINK_SALT, Document, LoginActivity
from .security import WRONG_PASSWORD_TO_CLOSE, close_own_account, lockout_response
from .selectors import profile_of


def home(request):
    return render(request, "notifications/home.html")


@limited("sign_up")
def signup(request):
    form = forms.SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            # One transaction: the account, the sign-in and both of their effects.
            with transaction.atomic():
                user = services.sign_up(**form.cleaned_data)
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        except services.UsernameTaken:
            form.add_error("username", "That username is taken.")
        else:
            messages.success(request, "Welcome! Your welcome email is on its way (see Activity).")
            return redirect("activity")
    status = 400 if form.errors else 200
    return render(request, "notifications/signup.html", {"form": form}, status=status)


@login_required
def documents(request):
    form = forms.DocumentForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        document = services.create_document(request.user, **form.cleaned_data)
        messages.success(request, f"Uploaded “{document.title}”.")
        return redirect("documents")
    return documents_page(request, form)


def documents_page(request, form=None, row_errors=None):
    """The documents page. ``row_errors`` ({document id: invalid form}) shows a row's errors
    beside its field; any error makes it a 400."""
    row_errors = row_errors or {}
    profile = {"profile": profile_of(request.user)}
    context = {
        "form": form or forms.DocumentForm(),
        "rows": [(d, row_errors.get(d.pk)) for d in Document.objects.filter(owner=request.user)],
        "counters": fragment(request, "notifications/counters_line.html", profile),
    }
    invalid = bool(row_errors) or bool(form is not None and form.errors)
    return render(request, "notifications/documents.html", context, status=400 if invalid else 200)


@login_required
def download(request, document_id: int):
    """The owner's own documents."""
    return attachment(get_object_or_404(Document, pk=document_id, owner=request.user))


def shared_download(request, token: str):
    """A share recipient's link (from the share email): signed, and good for SHARE_LINK_DAYS."""
    try:
        document_id, name = signing.loads(
            token, salt=SHARE_LINK_SALT, max_age=settings.SHARE_LINK_MAX_AGE
        )
    except signing.SignatureExpired:
        return render(request, "notifications/link_expired.html", status=410)
    except (signing.BadSignature, TypeError, ValueError) as bad:
        raise Http404("no such link") from bad
    # The file that was shared: after a replace or a delete, the link leads nowhere.
    return attachment(get_object_or_404(Document, pk=document_id, file=name))


def attachment(document: Document) -> FileResponse:
    try:
        stream = document.file.open("rb")
    except FileNotFoundError as gone:
        raise Http404("the file is gone") from gone
    response = FileResponse(
        stream,
        as_attachment=True,
        filename=document.original_name or "document",
        content_type="application/octet-stream",  # never what the name or the bytes suggest
    )
    # A download that nothing on this origin can run, whatever its type and content (the CSP
    # middleware keeps a header a view has set).
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@login_required
@require_POST
def replace_file(request, document_id: int):
    document = get_object_or_404(Document, pk=document_id, owner=request.user)
    form = forms.ReplaceFileForm(request.POST, request.FILES)
    if not form.is_valid():
        return documents_page(request, row_errors={document.pk: form})
    services.replace_file(document, form.cleaned_data["file"])
    messages.success(
        request, f"Replaced the file of “{document.title}”; the old one will be deleted."
    )
    return redirect("documents")


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def delete_document(request, document_id: int):
    """Asks first (GET: a page with the one button); deletes on POST."""
    document = get_object_or_404(Document, pk=document_id, owner=request.user)
    if request.method != "POST":
        return render(request, "notifications/delete_document.html", {"document": document})
    services.delete_document(document)
    messages.success(request, f"Deleted “{document.title}”; its file will be removed.")
    return redirect("documents")


@login_required
@require_POST
@limited("share")
def share_document(request, document_id: int):
    document = get_object_or_404(Document, pk=document_id, owner=request.user)
    form = forms.ShareForm(request.POST)
    if not form.is_valid():
        return documents_page(request, row_errors={document.pk: form})
    services.share_document(document, form.cleaned_data["email"], request.user)
    messages.success(
        request,
        f"Shared “{document.title}”: the recipient will be emailed, unless you delete it first.",
    )
    return redirect("documents")


@login_required
@limited("email_change")
def account(request):
    data = request.POST if request.method == "POST" else None
    form = forms.EmailForm(data, initial={"email": request.user.email})
    if request.method == "POST" and form.is_valid():
        before = request.user.email
        try:
            user = services.change_email(request.user, form.cleaned_data["email"])
        except services.EmailTaken as taken:
            form.add_error("email", str(taken))
        else:
            if user.email == before:
                messages.info(request, "That is already your address; nothing changed.")
            else:
                messages.success(
                    request, f"Your address is now {user.email}; both addresses will be emailed."
                )
            return redirect("account")
    status = 400 if form.errors else 200
    return render(request, "notifications/account.html", {"form": form}, status=status)


@login_required
def close_account(request):
    form = forms.CloseAccountForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        if close_own_account(request, form.cleaned_data["password"]):
            messages.success(request, "Your account was closed; a goodbye email is on its way.")
            return redirect("home")
        if getattr(request, "axes_locked_out", False):
            return lockout_response(request)
        form.add_error("password", WRONG_PASSWORD_TO_CLOSE)
    status = 400 if form.errors else 200
    return render(request, "notifications/close_account.html", {"form": form}, status=status)


def signed_in_or_401(view):
    """For the live parts: a session that ended (signed out, or by a password change
    elsewhere) gets a 401, which live.js answers by reloading the page, never the login page
    to paste into the part."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return HttpResponse(status=401)
        return view(request, *args, **kwargs)

    return wrapper


@login_required
def activity(request):
    live = fragment(request, "notifications/activity_live.html", activity_context(request.user))
    return render(request, "notifications/activity.html", {"live": live})


@signed_in_or_401
def activity_live(request):
    """The part of the activity page that changes, polled by live.js."""
    return live_response(
        fragment(request, "notifications/activity_live.html", activity_context(request.user)),
        request,
    )


@signed_in_or_401
def documents_counters(request):
    """The documents page's counters, polled by live.js."""
    profile = {"profile": profile_of(request.user)}
    return live_response(fragment(request, "notifications/counters_line.html", profile), request)


def fragment(request, template: str, context: dict) -> dict:
    """A live part of a page: its HTML and an ETag of it, which live.js sends back to be told
    "not modified" (304) when nothing changed, so the page rewrites it only when it did."""
    html = render_to_string(template, context, request)
    return {"html": html, "etag": f'"{hashlib.sha256(html.encode()).hexdigest()[:32]}"'}


def live_response(live: dict, request) -> HttpResponse:
    if request.headers.get("If-None-Match") == live["etag"]:
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(live["html"])
    response["ETag"] = live["etag"]
    return response


def activity_context(user) -> dict:
    effects = Effect.objects.filter(user=user).order_by("-created_at", "-pk")[:50]
    logins = LoginActivity.objects.filter(user=user).order_by("-at", "-pk")[:10]
    return {"effects": effects, "logins": logins, "profile": profile_of(user)}
