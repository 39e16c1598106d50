from django.contrib import admin

from .models import Document, FailedLogin, LoginActivity, Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "document_count", "storage_bytes", "login_count", "last_login_at")
    search_fields = ("user__username",)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "owner", "size", "created_at")
    search_fields = ("title", "owner__username")


@admin.register(LoginActivity)
class LoginActivityAdmin(admin.ModelAdmin):
    list_display = ("user", "at", "ip", "new_device", "ended_at", "duration")
    list_filter = ("new_device",)


@admin.register(FailedLogin)
class FailedLoginAdmin(admin.ModelAdmin):
    list_display = ("at", "ip", "user", "alerted")
    list_filter = ("alerted",)
