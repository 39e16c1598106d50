"""What Django's error reports may show of the settings.

Django hides settings whose names look secret (KEY, TOKEN, PASS...), but a password inside a
URL-valued setting (REDIS_URL, CELERY_BROKER_URL, CACHES' LOCATION) passes under an innocent
name. This filter masks the credentials of any URL in a setting, whatever the setting is called,
on the debug page and in the error emails alike."""

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host: the userinfo before the host, whatever the scheme.
_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


class SecretUrlFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key: Any, value: Any) -> Any:
        value = super().cleanse_setting(key, value)
        if type(value) is str:  # not a lazy object that only looks like one
            return _CREDENTIALS.sub(rf"\g<scheme>{self.cleansed_substitute}@", value)
        return value
