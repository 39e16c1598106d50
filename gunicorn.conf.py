# Read by gunicorn from the directory it starts in (the repository, /app in the image).
# Access lines never show a share or password-reset link's token, nor a line per live poll
# (project/logs.py).
logger_class = "project.logs.AccessLog"
