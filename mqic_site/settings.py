"""Django settings for MQIC.

Everything that differs between machines comes from the environment; the defaults run
the whole system on one machine (SQLite, a local sandbox HPC).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-dev-key-change-me")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "resources",
    "cases",
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
]

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
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
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
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
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
MQIC_HPC_NAME = os.environ.get("MQIC_HPC_NAME", "hpc")
# "local" runs pueue through a subprocess on this machine (the embedded sandbox);
# any other value is an SSH hostname.
MQIC_HPC_HOST = os.environ.get("MQIC_HPC_HOST", "local")
MQIC_HPC_PORT = int(os.environ.get("MQIC_HPC_PORT", "22"))
MQIC_HPC_USER = os.environ.get("MQIC_HPC_USER", "")
MQIC_HPC_KEY = os.environ.get("MQIC_HPC_KEY", "")
MQIC_HPC_KNOWN_HOSTS = os.environ.get("MQIC_HPC_KNOWN_HOSTS", "")
MQIC_HPC_BASE_DIR = os.environ.get("MQIC_HPC_BASE_DIR", str(BASE_DIR / "var" / "hpc" / "cases"))
# With the local sandbox HPC, pueue is the sandbox stand-in that `make run` installs.
MQIC_SANDBOX_DIR = BASE_DIR / "var" / "sandbox"
MQIC_PUEUE = os.environ.get(
    "MQIC_PUEUE", str(MQIC_SANDBOX_DIR / "bin" / "pueue") if MQIC_HPC_HOST == "local" else "pueue"
)
MQIC_GPU_GROUPS = env_list("MQIC_GPU_GROUPS", "gpu_a,gpu_b")
MQIC_LABEL_PREFIX = os.environ.get("MQIC_LABEL_PREFIX", "mqic_case_")
MQIC_ENTRY_SCRIPT = os.environ.get("MQIC_ENTRY_SCRIPT", "run.sh")
MQIC_READY_MARKER = os.environ.get("MQIC_READY_MARKER", "READY")
MQIC_QUIET_SECONDS = float(os.environ.get("MQIC_QUIET_SECONDS", "30"))
MQIC_SUBMIT_LEASE_SECONDS = float(os.environ.get("MQIC_SUBMIT_LEASE_SECONDS", "300"))
MQIC_MAX_ATTEMPTS = int(os.environ.get("MQIC_MAX_ATTEMPTS", "3"))
MQIC_LOST_GRACE_SECONDS = float(os.environ.get("MQIC_LOST_GRACE_SECONDS", "600"))
MQIC_CLOCK_SKEW_SECONDS = float(os.environ.get("MQIC_CLOCK_SKEW_SECONDS", "120"))
MQIC_RESUME_PAUSED_GROUPS = env_bool("MQIC_RESUME_PAUSED_GROUPS", False)
MQIC_SSH_CONNECT_TIMEOUT = float(os.environ.get("MQIC_SSH_CONNECT_TIMEOUT", "10"))
MQIC_SSH_COMMAND_TIMEOUT = float(os.environ.get("MQIC_SSH_COMMAND_TIMEOUT", "60"))
MQIC_SCHEDULE_SECONDS = int(os.environ.get("MQIC_SCHEDULE_SECONDS", "10"))

# --- django-q2 ------------------------------------------------------------------------
# Side-effecting tasks must never be silently re-delivered: `timeout` stays below `retry`
# and `max_attempts` is 1. Every pass is idempotent and the schedules run it again anyway.
Q_CLUSTER = {
    "name": "mqic",
    "workers": int(os.environ.get("MQIC_Q_WORKERS", "2")),
    "timeout": 600,
    "retry": 900,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.5,
    "orm": "default",
}
if os.environ.get("MQIC_Q_BROKER", "orm") == "redis":
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = os.environ.get("MQIC_REDIS_URL", "redis://127.0.0.1:6379/0")
# Set to pin the installation key in labels; empty: one is generated once per database.
MQIC_INSTALLATION_KEY = os.environ.get("MQIC_INSTALLATION_KEY", "")
MQIC_PORT = int(os.environ.get("MQIC_PORT", "8000"))
