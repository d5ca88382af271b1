"""A minimal Django project around django-oauth-toolkit (DOT), for the interop tests only.

The database path comes from DOT_INTEROP_DB; the access-token lifetime from DOT_INTEROP_TTL.
"""

import os

SECRET_KEY = "interop-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "dotserver.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    "dotserver.views.CountingMiddleware",
    # For the browser logins: DOT's /o/authorize/ needs a logged-in user (LoginRequiredMixin),
    # and its consent form and our login form are CSRF-protected.
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(os.path.dirname(__file__), "templates")],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
LOGIN_URL = "/accounts/login/"
STATIC_URL = "/static/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["DOT_INTEROP_DB"],
        # WAL: readers (token checks) do not wait for the writer (a rotation), and vice versa.
        "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; test users only
OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("DOT_INTEROP_TTL", "2")),
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "SCOPES": {"read": "Reading scope"},
    "DEFAULT_SCOPES": ["read"],
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

# The device authorization grant (RFC 8628). DOT puts these URIs in its device authorization
# response as they are, so they name the server's origin (DOT_INTEROP_URL, set by the test for
# runserver): the user-code page, and that page with the code filled in (its ?user_code= prefills the
# form). A poll interval of 1 s (DOT's default is 5) keeps the test short.
_ORIGIN = os.environ.get("DOT_INTEROP_URL", "http://127.0.0.1")
OAUTH2_PROVIDER.update(
    {
        "OAUTH_DEVICE_VERIFICATION_URI": _ORIGIN + "/o/device/",
        "OAUTH_DEVICE_VERIFICATION_URI_COMPLETE": _ORIGIN + "/o/device/?user_code={user_code}",
        "DEVICE_FLOW_INTERVAL": 1,
    }
)
