"""Django settings for MQIC.

Everything that differs between machines comes from the environment; the defaults run
the whole system on one machine (SQLite, the local HPC of ``make run``). There is no default
secret key: a signed django-q2 task is code execution, so a known key is never used silently.
"""

import os
import tomllib
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# The release, from pyproject.toml (one place): shown in the admin's header and in /metrics.
MQIC_VERSION = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["project"]["version"]
# The installation's private files (the demo's database, secret key and admin password): 0700.
MQIC_VAR_DIR = Path(os.environ.get("MQIC_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def secret_key() -> str:
    """From ``DJANGO_SECRET_KEY``, or the file ``DJANGO_SECRET_KEY_FILE`` names (``make run`` makes one)."""
    key = os.environ.get("DJANGO_SECRET_KEY", "").strip()
    if not key and (path := os.environ.get("DJANGO_SECRET_KEY_FILE")):
        try:
            key = Path(path).read_text().strip()
        except OSError as error:
            raise ImproperlyConfigured(
                f"DJANGO_SECRET_KEY_FILE={path} cannot be read: {error.strerror}"
            ) from error
    if len(key) < 50:
        raise ImproperlyConfigured(
            "MQIC needs a secret key of at least 50 random characters: set DJANGO_SECRET_KEY, or "
            "DJANGO_SECRET_KEY_FILE to a file that holds one (make one with: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(50))'). `make run` makes one for the demo in "
            "var/secret_key."
        )
    return key


SECRET_KEY = secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")

# Production behind an HTTPS proxy (see the README): secure cookies, HSTS, HTTPS only.
if env_bool("DJANGO_SECURE"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "axes",
    "resources",
    "cases",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

# Failed admin logins are throttled (django-axes: kept by Jazzband, records attempts in the
# database, so every web process and node sees the same count): after MQIC_LOGIN_FAILURE_LIMIT
# failures for one user name from one address, that pair is locked for MQIC_LOGIN_COOLOFF_MINUTES.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("MQIC_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("MQIC_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
if env_bool("DJANGO_SECURE"):  # behind the HTTPS proxy: the client's address is the one it forwards
    AXES_IPWARE_PROXY_COUNT = 1
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
# An operator's session ends after MQIC_SESSION_HOURS (a working day), not Django's two weeks.
SESSION_COOKIE_AGE = int(float(os.environ.get("MQIC_SESSION_HOURS", "12")) * 3600)

# Every page (admin, console, live fragments) forbids inline script and script from elsewhere:
# whatever a job, a folder or a host's output manages to put into a page cannot run. The admin and
# the console load their scripts from our static files only; inline style attributes stay allowed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'self'"],
    }
}

ROOT_URLCONF = "mqic_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mqic_site.wsgi.application"

# SQLite by default, tuned for several writers (qcluster workers, the watcher, the admin):
# WAL lets readers run beside a writer, IMMEDIATE takes the write lock at BEGIN so that a
# compare-and-swap never fails half-way with "database is locked", and the busy timeout
# makes writers queue instead of erroring.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{MQIC_VAR_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that the qcluster and worker processes that tests start share it.
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("MQIC_TEST_DB", str(BASE_DIR / ".test-db.sqlite3"))}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A cache every process shares: django-q2 keeps its cluster heartbeat there, and the admin
# overview reads it to say whether a qcluster is alive.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "mqic_cache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# The site's time zone: how the admin shows times, and the months GPU accounting is kept by. An IANA
# name (Europe/Berlin); Django refuses to start with an unknown one.
TIME_ZONE = os.environ.get("MQIC_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# Times to the second everywhere (mqic_site/formats/en/formats.py): operators compare them with logs.
FORMAT_MODULE_PATH = ["mqic_site.formats"]

STATIC_URL = "static/"
# Where collectstatic puts the files whitenoise serves (a deployment keeps them out of the code checkout).
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "mqic": {"handlers": ["console"], "level": os.environ.get("MQIC_LOG_LEVEL", "INFO")},
        "paramiko": {"handlers": ["console"], "level": "WARNING"},
    },
}

# --- MQIC ---------------------------------------------------------------------------
MQIC_NEW_CASES_DIR = Path(os.environ.get("MQIC_NEW_CASES_DIR", BASE_DIR / "new_cases"))
MQIC_RESULTS_DIR = Path(os.environ.get("MQIC_RESULTS_DIR", BASE_DIR / "results"))
# Many users: the inbox holds one folder per Django user name, <inbox>/<username>/<case folder>/, and
# each case is that user's (cases/services/owners.py). Off: every case is the operators', as before.
MQIC_INBOX_PER_USER = env_bool("MQIC_INBOX_PER_USER", False)
# On a shared file system: a case folder is taken only when whoever owns its user folder (st_uid)
# also owns the case folder. Off only where one account writes every folder (a single-account set-up).
MQIC_INBOX_CHECK_OWNER = env_bool("MQIC_INBOX_CHECK_OWNER", True)
# Several hosts: a TOML file (see resources/config.py and the README). Without it, the one host of
# the short form below.
MQIC_HPC_CONFIG = os.environ.get("MQIC_HPC_CONFIG", "")
MQIC_HPC_NAME = os.environ.get("MQIC_HPC_NAME", "hpc")
# How MQIC reaches that host: "ssh" (a login node), or "local": pueue on this machine, the
# demo's local HPC (`make run` sets it). A deployment choice, never an admin edit.
MQIC_HPC_TRANSPORT = os.environ.get("MQIC_HPC_TRANSPORT", "ssh")
# transport = "local" runs jobs as MQIC's own user on this machine: the demo's, or said on purpose.
MQIC_ALLOW_LOCAL_TRANSPORT = env_bool("MQIC_ALLOW_LOCAL_TRANSPORT", False)
MQIC_HPC_HOST = os.environ.get("MQIC_HPC_HOST", "localhost")
MQIC_HPC_PORT = int(os.environ.get("MQIC_HPC_PORT", "22"))
MQIC_HPC_USER = os.environ.get("MQIC_HPC_USER", "")
MQIC_HPC_KEY = os.environ.get("MQIC_HPC_KEY", "")
MQIC_HPC_KNOWN_HOSTS = os.environ.get("MQIC_HPC_KNOWN_HOSTS", "")
MQIC_HPC_BASE_DIR = os.environ.get("MQIC_HPC_BASE_DIR", str(BASE_DIR / "var" / "hpc" / "cases"))
MQIC_PUEUE = os.environ.get("MQIC_PUEUE", "pueue")
MQIC_HPC_PROXY_JUMP = os.environ.get("MQIC_HPC_PROXY_JUMP", "")
MQIC_GPU_GROUPS = env_list("MQIC_GPU_GROUPS", "gpu_a,gpu_b")
MQIC_LABEL_PREFIX = os.environ.get("MQIC_LABEL_PREFIX", "mqic_case_")
MQIC_ENTRY_SCRIPT = os.environ.get("MQIC_ENTRY_SCRIPT", "run.sh")
MQIC_READY_MARKER = os.environ.get("MQIC_READY_MARKER", "READY")
# An optional file in a case folder naming the host or GPU group it must run on (cases/services/placement.py).
MQIC_PLACEMENT_FILE = os.environ.get("MQIC_PLACEMENT_FILE", "placement.toml")
MQIC_QUIET_SECONDS = float(os.environ.get("MQIC_QUIET_SECONDS", "30"))
MQIC_SUBMIT_LEASE_SECONDS = float(os.environ.get("MQIC_SUBMIT_LEASE_SECONDS", "300"))
MQIC_MAX_ATTEMPTS = int(os.environ.get("MQIC_MAX_ATTEMPTS", "3"))
# How long a finished case's pueue task and remote folder stay on the host once its results are
# home (0: removed in the monitor pass that brought them home).
MQIC_REMOTE_RETENTION_SECONDS = float(os.environ.get("MQIC_REMOTE_RETENTION_SECONDS", "0"))
# A case whose handling raised unexpected errors this many passes in a row is given up (failed).
MQIC_MAX_CASE_ERRORS = int(os.environ.get("MQIC_MAX_CASE_ERRORS", "3"))
MQIC_LOST_GRACE_SECONDS = float(os.environ.get("MQIC_LOST_GRACE_SECONDS", "600"))
MQIC_CLOCK_SKEW_SECONDS = float(os.environ.get("MQIC_CLOCK_SKEW_SECONDS", "120"))
MQIC_RESUME_PAUSED_GROUPS = env_bool("MQIC_RESUME_PAUSED_GROUPS", False)
# After this many failed contacts in a row a host backs off: the wait starts at BACKOFF_SECONDS
# and doubles with each further failure, up to BACKOFF_MAX_SECONDS.
MQIC_HOST_FAILURES_BEFORE_BACKOFF = int(os.environ.get("MQIC_HOST_FAILURES_BEFORE_BACKOFF", "3"))
MQIC_HOST_BACKOFF_SECONDS = float(os.environ.get("MQIC_HOST_BACKOFF_SECONDS", "30"))
MQIC_HOST_BACKOFF_MAX_SECONDS = float(os.environ.get("MQIC_HOST_BACKOFF_MAX_SECONDS", "900"))
# At most this many contacts (SSH connections) with one host at once, across all workers; a pass
# that finds them all in use skips the host until its next run. Keep it below the number of
# qcluster workers (MQIC_Q_WORKERS), so that a slow host can never hold every worker (check mqic.W001).
MQIC_HOST_MAX_CONNECTIONS = int(os.environ.get("MQIC_HOST_MAX_CONNECTIONS", "2"))
MQIC_SSH_CONNECT_TIMEOUT = float(os.environ.get("MQIC_SSH_CONNECT_TIMEOUT", "10"))
MQIC_SSH_COMMAND_TIMEOUT = float(os.environ.get("MQIC_SSH_COMMAND_TIMEOUT", "60"))
# Caps on what crosses the transfer boundary: a job controls its results, and anyone who
# can write into the inbox controls a case folder.
MQIC_RESULT_MAX_BYTES = int(os.environ.get("MQIC_RESULT_MAX_BYTES", str(10 << 30)))
MQIC_RESULT_MAX_MEMBERS = int(os.environ.get("MQIC_RESULT_MAX_MEMBERS", "100000"))
MQIC_UPLOAD_MAX_BYTES = int(os.environ.get("MQIC_UPLOAD_MAX_BYTES", str(50 << 30)))
MQIC_UPLOAD_MAX_MEMBERS = int(os.environ.get("MQIC_UPLOAD_MAX_MEMBERS", "1000000"))
MQIC_REMOTE_OUTPUT_MAX_BYTES = int(os.environ.get("MQIC_REMOTE_OUTPUT_MAX_BYTES", str(256 << 20)))
# Many users (cases/services/queueing.py): the next free GPU group goes to the waiting case whose owner
# used the least GPU time lately, each attempt's GPU time counting half after this many hours.
MQIC_FAIR_SHARE_HALF_LIFE_HOURS = float(os.environ.get("MQIC_FAIR_SHARE_HALF_LIFE_HOURS", "24"))
# At most this many GPU groups held at once by one user's cases (0: no limit; the operators' cases,
# which have no owner, have none).
MQIC_MAX_RUNNING_PER_USER = int(os.environ.get("MQIC_MAX_RUNNING_PER_USER", "0"))
if not MQIC_FAIR_SHARE_HALF_LIFE_HOURS > 0:
    raise ImproperlyConfigured("MQIC_FAIR_SHARE_HALF_LIFE_HOURS must be a number of hours above 0")
if MQIC_MAX_RUNNING_PER_USER < 0:
    raise ImproperlyConfigured("MQIC_MAX_RUNNING_PER_USER must be 0 (no limit) or more")

# --- django-q2 ------------------------------------------------------------------------
# Side-effecting tasks must never be silently re-delivered: `timeout` stays below `retry`
# and `max_attempts` is 1. Every pass is idempotent and the schedules run it again anyway.
Q_CLUSTER = {
    "name": "mqic",
    # More than MQIC_HOST_MAX_CONNECTIONS: a pass stuck on one slow host leaves a worker for the others.
    "workers": int(os.environ.get("MQIC_Q_WORKERS", "3")),
    "timeout": 600,
    "retry": 900,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.5,
    "orm": "default",
    # A node started with Q_CLUSTER_NAME=<name> takes its tasks from a queue of its own; django-q2
    # 1.11 then reads this key and fails at import without it (no per-cluster overrides here).
    "ALT_CLUSTERS": {},
}
if os.environ.get("MQIC_Q_BROKER", "orm") == "redis":
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = os.environ.get("MQIC_REDIS_URL", "redis://127.0.0.1:6379/0")
# --- the operator console ---------------------------------------------------------------
# Where operators reach MQIC, for the links in notifications (no trailing slash).
MQIC_PUBLIC_URL = (
    os.environ.get("MQIC_PUBLIC_URL", "").rstrip("/") or f"http://127.0.0.1:{os.environ.get('MQIC_PORT', '8000')}"
)
# Notifications of failed and stuck cases and of hosts going down or coming back: mail to these
# addresses (through Django's EMAIL_* settings below) and a JSON POST to the webhook. Empty: none.
MQIC_NOTIFY_EMAILS = env_list("MQIC_NOTIFY_EMAILS")
MQIC_NOTIFY_WEBHOOK = os.environ.get("MQIC_NOTIFY_WEBHOOK", "")
MQIC_NOTIFY_TIMEOUT = float(os.environ.get("MQIC_NOTIFY_TIMEOUT", "5"))
# Retention (manage.py prune, daily): pass records, the notes of long-ended cases, and delivered
# notifications go after so many days; a case's row, attempts and status changes stay.
MQIC_KEEP_PASS_RUNS_DAYS = float(os.environ.get("MQIC_KEEP_PASS_RUNS_DAYS", "14"))
MQIC_KEEP_CASE_NOTES_DAYS = float(os.environ.get("MQIC_KEEP_CASE_NOTES_DAYS", "90"))
MQIC_KEEP_NOTIFICATIONS_DAYS = float(os.environ.get("MQIC_KEEP_NOTIFICATIONS_DAYS", "90"))
# How long a host keeps the trace of each cleaned-up attempt (an empty file): the age of a database
# backup that can be restored without a case whose results were moved away being run again.
MQIC_KEEP_REMOTE_TRACES_DAYS = float(os.environ.get("MQIC_KEEP_REMOTE_TRACES_DAYS", "30"))
# A webhook must be https: a notification names cases and hosts. http only when said so.
MQIC_NOTIFY_ALLOW_HTTP = env_bool("MQIC_NOTIFY_ALLOW_HTTP", False)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = MQIC_NOTIFY_TIMEOUT
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "mqic@localhost")
# /metrics (OpenMetrics): this bearer token, or a staff session. Empty: staff sessions only.
MQIC_METRICS_TOKEN = os.environ.get("MQIC_METRICS_TOKEN", "")
# How often the live pages (dashboard, case list, case page, log tail) ask for fresh values.
MQIC_LIVE_SECONDS = float(os.environ.get("MQIC_LIVE_SECONDS", "5"))
# Set to pin the installation key in labels; empty: one is generated once per database.
MQIC_INSTALLATION_KEY = os.environ.get("MQIC_INSTALLATION_KEY", "")
MQIC_PORT = int(os.environ.get("MQIC_PORT", "8000"))
