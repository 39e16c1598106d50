# One image for every role: web (gunicorn), worker, beat and flower differ only by command.

FROM python:3.13-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
# The runtime lock only (requirements.txt: every dependency, transitive ones included, with the
# hashes of its files): each download is checked against its hash, nothing is resolved beyond
# the lock, nothing is built from source, and `pip check` proves the set complete.
COPY requirements.txt /tmp/requirements.txt
RUN /venv/bin/pip install --no-cache-dir --require-hashes --no-deps --only-binary :all: \
        -r /tmp/requirements.txt \
    && /venv/bin/pip check

FROM python:3.13-slim
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=project.settings \
    DEBUG=false \
    MEDIA_ROOT=/data/media \
    STATIC_ROOT=/app/static \
    CELERY_BEAT_SCHEDULE_FILENAME=/tmp/celerybeat-schedule
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app \
    && mkdir -p /data/media \
    && chown app:app /data/media
WORKDIR /app
COPY --from=build /venv /venv
COPY --chown=app:app . .
# Static files are collected at build time, with production settings; the SECRET_KEY and
# EMAIL_URL here are throwaways for this step only (the container gets its own from .env).
RUN SECRET_KEY=collectstatic-only-not-a-secret-for-this-build-step-only \
    EMAIL_URL=consolemail:// python manage.py collectstatic --noinput --verbosity 0
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
# Django's deployment checks first: a setting that would hurt in production stops the container.
CMD ["sh", "-c", "python manage.py check --deploy --fail-level WARNING && exec gunicorn project.wsgi --bind 0.0.0.0:8000 --workers 3 --access-logfile -"]
