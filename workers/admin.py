from django.contrib import admin

from .models import Effect


@admin.register(Effect)
class EffectAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "status", "attempts", "user", "created_at", "finished_at")
    list_filter = ("status", "task")
    search_fields = ("=id", "task", "user__username")
    readonly_fields = [f.name for f in Effect._meta.fields]
    date_hierarchy = "created_at"
