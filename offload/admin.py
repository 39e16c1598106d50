from django.contrib import admin, messages

from . import outbox
from .models import Effect


@admin.register(Effect)
class EffectAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "status", "attempts", "user", "created_at", "finished_at")
    list_filter = ("status", "task")
    search_fields = ("=id", "task", "user__username")
    readonly_fields = [f.name for f in Effect._meta.fields]
    date_hierarchy = "created_at"
    actions = ["replay"]

    @admin.action(description="Replay selected dead letters")
    def replay(self, request, queryset):
        count = outbox.replay(queryset)
        self.message_user(request, f"Replayed {count} dead letter(s).", messages.SUCCESS)

    def has_add_permission(self, request):
        return False  # effects are recorded by offload(), never by hand
