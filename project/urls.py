from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.db import transaction
from django.urls import include, path

from notifications import views
from notifications.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    # Django's own views, so the real user_logged_in / user_login_failed signals fire; atomic so
    # the effects they record commit with the sign-in.
    path("login/", transaction.atomic(auth_views.LoginView.as_view()), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("documents/", views.documents, name="documents"),
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
]

if settings.DEBUG:
    # Development only: in production a web server or object storage serves uploads.
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
