from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import outbox
from .models import Effect


@admin.register(Effect)
class EffectAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not subscriptable at run time
    list_display = (
        "id", "task", "status", "attempts", "user", "created_at", "finished_at", "reason"
    )  # fmt: skip
    list_filter = ("status", "task")
    search_fields = ("=id", "task", "user__username")
    readonly_fields = [f.name for f in Effect._meta.fields]
    date_hierarchy = "created_at"
    actions = ["replay"]

    @admin.action(description="Replay selected dead letters")
    def replay(self, request: HttpRequest, queryset: QuerySet[Effect]) -> None:
        count = outbox.replay(queryset)
        self.message_user(request, f"Replayed {count} dead letter(s).", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # effects are recorded by offload(), never by hand
