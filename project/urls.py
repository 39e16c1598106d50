from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.db import transaction
from django.urls import include, path, re_path

from notifications import views
from notifications.api import api
from notifications.forms import PasswordResetForm
from notifications.limits import limited
from project import devmail

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    # Django's own views, so the real user_logged_in / user_login_failed signals fire; atomic so
    # the effects they record commit with the sign-in.
    path("login/", transaction.atomic(auth_views.LoginView.as_view()), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Django's password views with the project's templates; the reset email is an effect
    # (forms.PasswordResetForm). A changed password ends the user's other sessions.
    path(
        "password/change/",
        auth_views.PasswordChangeView.as_view(template_name="notifications/password_change.html"),
        name="password_change",
    ),
    path(
        "password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="notifications/password_done.html"),
        name="password_change_done",
    ),
    path(
        "password/reset/",
        limited("password_reset")(
            auth_views.PasswordResetView.as_view(
                form_class=PasswordResetForm, template_name="notifications/password_reset.html"
            )
        ),
        name="password_reset",
    ),
    path(
        "password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="notifications/password_reset_sent.html"
        ),
        name="password_reset_done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="notifications/password_reset_confirm.html"
        ),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="notifications/password_done.html"
        ),
        name="password_reset_complete",
    ),
    path("documents/", views.documents, name="documents"),
    path("documents/counters", views.documents_counters, name="documents_counters"),
    path("documents/<int:document_id>/download", views.download, name="download"),
    path("shared/<str:token>", views.shared_download, name="shared_download"),
    path("documents/<int:document_id>/file", views.replace_file, name="replace_file"),
    path("documents/<int:document_id>/delete", views.delete_document, name="delete_document"),
    path("documents/<int:document_id>/share", views.share_document, name="share_document"),
    path("account/", views.account, name="account"),
    path("account/close", views.close_account, name="close_account"),
    path("activity/", views.activity, name="activity"),
    path("activity/live", views.activity_live, name="activity_live"),
    path("", include("offload.urls")),  # /healthz, /readyz, /metrics
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    # Development's mailbox (project/devmail.py): 404 unless DEBUG.
    path("dev/mail/", devmail.inbox, name="devmail"),
    re_path(rf"^dev/mail/(?P<name>{devmail.NAME})/$", devmail.message, name="devmail_message"),
    re_path(
        rf"^dev/mail/(?P<name>{devmail.NAME})/html$", devmail.message_html, name="devmail_html"
    ),
]
