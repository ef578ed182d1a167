"""recsite settings: one module, driven by the environment.

Two modes:
- embedded (default): SQLite in WAL mode and a file-system Celery broker under
  ``var/``; nothing else needs to run. A secret key is generated into ``var/`` once.
- production (``RECSITE_ENV=production``): ``SECRET_KEY``, ``DATABASE_URL``,
  ``ALLOWED_HOSTS`` and a Redis URL are required; there are no defaults for them.

The README has the table of every variable read here.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# --- typed environment helpers: a bad value fails at start-up, not at first use ---


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"Set the environment variable {name}.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}.")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


RECSITE_ENV = env_str("RECSITE_ENV", "embedded")
if RECSITE_ENV not in {"embedded", "production"}:
    raise ImproperlyConfigured(f"RECSITE_ENV must be 'embedded' or 'production', got {RECSITE_ENV!r}.")
PRODUCTION = RECSITE_ENV == "production"

# Runtime state of the embedded mode (database, broker folders, secret key, artifacts).
VAR_DIR = Path(env_str("RECSITE_VAR_DIR", str(BASE_DIR / "var"))).resolve()


def _embedded_secret_key() -> str:
    """Read the embedded mode's secret key from var/, creating it on first start."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting together must not write two different keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY", required=PRODUCTION) or _embedded_secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("Set ALLOWED_HOSTS (comma-separated) in production.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "axes",
    "csp",
    "engagement",
    "training",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every answer, the 400 below included.
    "csp.middleware.CSPMiddleware",
    # 400 for a NUL byte in the path or query, which PostgreSQL cannot store or compare.
    "recsite.middleware.RejectNulBytesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it answers a locked-out login with 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "recsite.urls"
WSGI_APPLICATION = "recsite.wsgi.application"

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

# --- database ---

DATABASE_URL = env_str("DATABASE_URL", required=PRODUCTION)
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
            conn_health_checks=True,
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("RECSITE_SQLITE_PATH", str(VAR_DIR / "recsite.sqlite3")),
            "OPTIONS": {
                # WAL lets the web server read while the worker writes; IMMEDIATE takes
                # the write lock at BEGIN so two writers queue on the busy timeout instead
                # of failing with "database is locked" when a read upgrades to a write.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file, not :memory:, so a Celery worker process can share the test database.
            "TEST": {"NAME": str(VAR_DIR / "test.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache (API throttling counters live here, so it must be shared by all processes) ---

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "recsite.cache.DegradingRedisCache", "LOCATION": REDIS_URL}}  # Redis down: a miss
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- auth, i18n, static ---

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username or address before ModelBackend
# spends a PBKDF2 hash on the guess.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Request bodies above this are refused (413 on the API); the event batch limit of
# 1,000 events fits well under it.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("RECSITE_MAX_BODY_BYTES", 1_000_000)

# --- security (all on in production; `manage.py check --deploy` passes there) ---

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (only then).
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # /healthz and /readyz are probed over plain HTTP from inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- login lockout (django-axes: https://django-axes.readthedocs.io/en/latest/4_configuration.html) ---

# Both login pages (/accounts/login/, /admin/login/) count failed logins per username and
# per client address, separately: the 10th failure for either locks it for 15 minutes,
# right password or not, and the page answers 429. Per username stops a guesser spread
# over many addresses; per address stops one client guessing many usernames (and its
# PBKDF2 load: a locked request costs a query, no hash). 10 leaves room for a person's
# typos; 15 minutes holds a guesser to ~1,000 tries a day per account. The price: a
# guesser can keep one username locked; `manage.py axes_reset_username NAME` (or
# axes_reset) lets it in again.
AXES_FAILURE_LIMIT = env_int("RECSITE_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("RECSITE_LOGIN_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
# Failures are forgotten 15 minutes after the last one, never by a login: axes would
# clear every failure of the address and of the username, so a guesser with an account
# of their own could log into it every 9 guesses and never be locked.
AXES_RESET_ON_SUCCESS = False
# A try while locked is refused and not stored: axes appends each failure's form (password
# masked) to its row, which a client hammering a lock would grow without end.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# The database handler: shared by every web process in both modes, and still counting
# while Redis is down (the production cache then answers a miss, which would let guesses through).
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# The client's address (recsite.middleware.client_ip): REMOTE_ADDR, or with n trusted
# proxies in front (a load balancer that appends to X-Forwarded-For: set 1), the address
# the outermost proxy saw. Without it, behind a proxy every client shares the proxy's
# address, and one guesser locks everyone out.
RECSITE_TRUSTED_PROXIES = env_int("RECSITE_TRUSTED_PROXIES", 0)
AXES_CLIENT_IP_CALLABLE = "recsite.middleware.client_ip"

# --- Content-Security-Policy (django-csp: https://django-csp.readthedocs.io/en/latest/configuration.html) ---

# Only this site's own files run or style a page: no inline script, style element or
# style attribute, no eval, no plugin, no framing, no <base>, forms post only here. The
# dashboard, login and admin need nothing more (tests/security/test_csp*.py check each in
# Chromium); htmx's own indicator style is turned off in templates/base.html (recsite.css
# has those rules). data: images: Pico's and Swagger UI's icons are SVG data URLs in
# their CSS. NONCE is added to the header only on a page whose template uses
# request.csp_nonce: the API docs, whose Swagger UI page has an inline script and style
# (templates/drf_spectacular/swagger_ui.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

# --- REST API ---

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "engagement.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Never AllowAny: every endpoint needs the shop's key unless it says otherwise.
    "DEFAULT_PERMISSION_CLASSES": ["engagement.permissions.HasShopApiKey"],
    "DEFAULT_THROTTLE_CLASSES": ["engagement.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env_str("RECSITE_API_KEY_RATE", "6000/min")},
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # drf-spectacular's, plus the error answers every operation can give (docs/reliability.md, fuzzing).
    "DEFAULT_SCHEMA_CLASS": "recsite.schema.ErrorDocumentingAutoSchema",
    "EXCEPTION_HANDLER": "recsite.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
# Seconds a process trusts an API key it verified (engagement.authentication): a key
# revoked elsewhere still works here for at most this long. 0: verify every request.
RECSITE_API_KEY_CACHE_SECONDS = env_float("RECSITE_API_KEY_CACHE_SECONDS", 5.0)
if not 0 <= RECSITE_API_KEY_CACHE_SECONDS <= 300:
    raise ImproperlyConfigured(f"RECSITE_API_KEY_CACHE_SECONDS must be 0 to 300, got {RECSITE_API_KEY_CACHE_SECONDS}.")

SPECTACULAR_SETTINGS = {
    "TITLE": "recsite API",
    "DESCRIPTION": "Send engagement events, sync the catalog, get recommendations.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A recommendation's strategy and its explanation's source are the same choice set.
    "ENUM_NAME_OVERRIDES": {"StrategyEnum": ["model", "popular"]},
}

# --- Celery (https://docs.celeryq.dev/en/stable/userguide/configuration.html) ---

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://localhost//"
if PRODUCTION and CELERY_BROKER_URL.startswith("filesystem"):
    raise ImproperlyConfigured("Set CELERY_BROKER_URL or REDIS_URL (Redis) in production.")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's file-system transport: a real broker for real worker processes, no server.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", f"file://{VAR_DIR / 'celery-results'}")
    # Neither kombu nor the file result backend creates its folders, and every process
    # (web, worker, beat) may be the first to need them.
    for _folder in (BROKER_DIR / "queue", BROKER_DIR / "control", VAR_DIR / "celery-results"):
        _folder.mkdir(parents=True, exist_ok=True)
else:
    # Redis re-delivers an unacknowledged task after the visibility timeout; it must be
    # longer than the longest task (a training run), or a running task is started twice.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 4 * 3600)}
    CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_IGNORE_RESULT = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# One task at a time per process: folding and training are long, and a prefetched task
# would wait behind them while another worker is idle.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Defaults for every task; the slow ones (training) set their own.
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "fold-engagement-every-minute": {
        "task": "engagement.tasks.compute_engagement",
        "schedule": env_float("RECSITE_FOLD_EVERY_SECONDS", 60.0),
        # While no worker runs, don't let a pile of identical folds queue up.
        "options": {"expires": 55},
    },
    "sweep-training-runs": {
        "task": "training.tasks.sweep_training_runs",
        "schedule": env_float("RECSITE_SWEEP_EVERY_SECONDS", 30.0),
        "options": {"expires": 25},
    },
}
# Retrain on a schedule too (0 turns it off); a run already in flight is left alone.
RETRAIN_EVERY_HOURS = env_float("RECSITE_RETRAIN_EVERY_HOURS", 24.0)
if RETRAIN_EVERY_HOURS > 0:
    CELERY_BEAT_SCHEDULE["retrain-on-schedule"] = {
        "task": "training.tasks.scheduled_retrain",
        "schedule": RETRAIN_EVERY_HOURS * 3600,
        "options": {"expires": 600},
    }
# Training has its own queue so a GPU machine can run `celery worker -Q training`;
# the embedded worker and the tests' worker consume both queues.
CELERY_TASK_ROUTES = {"training.tasks.retrain": {"queue": "training"}}

# --- recsite ---

RECSITE_INGEST = {
    "MAX_BATCH": 1000,
    # Largest hover or dwell one event may claim: 1 hour. A day-long "hover" is a tab
    # left open, not interest; the score clips far lower anyway (RECSITE_ENGAGEMENT).
    "MAX_SIGNAL_MS": 3_600_000,
    # How far in the future occurred_at may be (client clock skew).
    "MAX_FUTURE_SKEW_SECONDS": 300,
    "MAX_ID_LENGTH": 100,
}

# The engagement score's weights; docs/engagement.md explains each and gives a worked example.
RECSITE_ENGAGEMENT = {
    "HOVER_CAP_MS": env_int("RECSITE_HOVER_CAP_MS", 10_000),
    "DWELL_CAP_MS": env_int("RECSITE_DWELL_CAP_MS", 300_000),
    "HOVER_SCALE": env_float("RECSITE_HOVER_SCALE", 3.0),
    "DWELL_SCALE": env_float("RECSITE_DWELL_SCALE", 1.0),
    "CLICK_SCALE": env_float("RECSITE_CLICK_SCALE", 1.0),
    "HOVER_WEIGHT": env_float("RECSITE_HOVER_WEIGHT", 0.2),
    "DWELL_WEIGHT": env_float("RECSITE_DWELL_WEIGHT", 0.4),
    "CLICK_WEIGHT": env_float("RECSITE_CLICK_WEIGHT", 0.4),
    "HALF_LIFE_DAYS": env_float("RECSITE_HALF_LIFE_DAYS", 30.0),
}

# Click fraud (docs/engagement.md "Click fraud"): the fold flags a customer whose events in
# any 60 s are more than a person makes, or whose dwell in any 60 s (clipped per event)
# passes 60 s by more than the slack. The slack is one capped read by default: an event's
# dwell is time spent before it, so one read may have started before the 60 s. Only live
# events are judged: received at most MAX_LAG_SECONDS after they happened (imported history
# is not), with occurred_at sent by the shop. ENABLED false skips the check (no flags).
RECSITE_FRAUD = {
    "ENABLED": env_bool("RECSITE_FRAUD_ENABLED", True),
    "MAX_EVENTS_PER_MINUTE": env_int("RECSITE_FRAUD_MAX_EVENTS_PER_MINUTE", 60),
    "DWELL_SLACK_MS": env_int("RECSITE_FRAUD_DWELL_SLACK_MS", RECSITE_ENGAGEMENT["DWELL_CAP_MS"]),
    "MAX_LAG_SECONDS": env_int("RECSITE_FRAUD_MAX_LAG_SECONDS", 24 * 3600),
}

# Popular products are ranked by one GROUP BY over engagement; each ranking is cached
# this long (seconds; 0 turns the cache off). A catalog upsert clears it.
RECSITE_POPULAR_CACHE_SECONDS = env_int("RECSITE_POPULAR_CACHE_SECONDS", 60)
# Merchandising rules (docs/rules.md): each web process reads the rules in force at most
# this often, so a rule saved or ended applies within it (and at its start or end time).
RECSITE_RULES_REFRESH_SECONDS = env_float("RECSITE_RULES_REFRESH_SECONDS", 2.0)

# Training runs and serving (docs/model.md). Each value can be overridden per run
# (POST /api/v1/training-runs/ {"options": {...}} or manage.py train --option).
RECSITE_TRAINING = {
    # Artifacts live here; in production every web and worker machine must see the same
    # directory (a shared volume), since workers write and web processes read.
    "MODEL_DIR": Path(env_str("RECSITE_MODEL_DIR", str(VAR_DIR / "models"))).resolve(),
    # The model (training.ml.model.RecommenderConfig) and the loop (training.ml.loop.TrainConfig).
    "EMBED_DIM": env_int("RECSITE_EMBED_DIM", 32),
    "DROPOUT": 0.0,
    # A NeuMF-style dot-product branch added to the original MLP's logit (docs/model.md:
    # it got small shops past the MLP's popularity plateau and helped on ml-100k).
    "DOT_BRANCH": env_bool("RECSITE_DOT_BRANCH", True),
    # The customer vector: "items" folds it from the customer's most recent HISTORY_LENGTH
    # engaged products, "id" learns one per customer, "items+id" both (docs/model.md).
    "CUSTOMER_VECTOR": env_str("RECSITE_CUSTOMER_VECTOR", "items"),
    "HISTORY_LENGTH": env_int("RECSITE_HISTORY_LENGTH", 100),
    "HISTORY_DECAY": env_float("RECSITE_HISTORY_DECAY", 1.0),
    "TIED_CONTEXT": env_bool("RECSITE_TIED_CONTEXT", False),
    # The loss (training.ml.loop.TrainConfig): "softmax" ranks each engaged pair against
    # SOFTMAX_NEGATIVES products shared by the batch, drawn ~ (1 + rows) ** NEGATIVE_EXPONENT
    # (log-q corrected); "bce" is the per-channel cross-entropy with NEGATIVES_PER_POSITIVE
    # negatives per pair (the loss before issue 13). docs/model.md has the measurements.
    "LOSS": env_str("RECSITE_TRAINING_LOSS", "softmax"),
    "SOFTMAX_NEGATIVES": env_int("RECSITE_SOFTMAX_NEGATIVES", 128),
    "NEGATIVE_EXPONENT": env_float("RECSITE_NEGATIVE_EXPONENT", 0.75),
    # The settings search inside a training run (training/ml/search.py): at most this many
    # seconds of trying variations around the settings on the shop's validation split; a
    # plain retrain reuses the last choice, and the search reruns when it is this many days
    # old, or when a run asks for it (options {"search": true}). 0 seconds: never search.
    "SEARCH_SECONDS": env_float("RECSITE_TRAINING_SEARCH_SECONDS", 300.0),
    "SEARCH_EVERY_DAYS": env_float("RECSITE_TRAINING_SEARCH_EVERY_DAYS", 7.0),
    "EPOCHS": env_int("RECSITE_TRAIN_EPOCHS", 20),
    # 0: chosen per run so an epoch has at least MIN_STEPS_PER_EPOCH steps, within
    # [128, 1024]; small shops otherwise get too few Adam steps per epoch (docs/model.md).
    "BATCH_SIZE": 0,
    "MIN_STEPS_PER_EPOCH": 400,
    # For the softmax loss over folded customers (docs/model.md "Issue 13"): 3e-3 reached the
    # best validation in 7-8 epochs on ml-100k, YooChoose and DIGINETICA; BCE wanted 5e-4-1e-3.
    "LR": 3e-3,
    "WEIGHT_DECAY": 0.0,
    # An engaged pair's target is at least this on every channel (1-3 star ratings were
    # taught as near-negatives), and L2 on the embedding rows a batch uses; both measured
    # against tuned ALS in docs/model.md "Against ALS and BPR".
    "POSITIVE_FLOOR": env_float("RECSITE_POSITIVE_FLOOR", 0.5),
    "EMBEDDING_L2": env_float("RECSITE_EMBEDDING_L2", 1e-3),
    "NEGATIVES_PER_POSITIVE": 4,
    "PATIENCE": 3,
    # After early stopping, train the chosen settings again on the training and validation
    # rows together for the best epoch's count, and serve that (training/ml/refit.py;
    # docs/model.md "The refit"). False: serve the early-stopped model (half the time).
    "REFIT": env_bool("RECSITE_TRAINING_REFIT", True),
    # ...when the validation rows add at least this share of the rows early stopping
    # trained on (0: always). At 1 row in 20 or fewer (customers with dozens of rows each,
    # a ratings shop) the refit measured no gain and costs as much as training again.
    "REFIT_MIN_SHARE": env_float("RECSITE_TRAINING_REFIT_MIN_SHARE", 0.05),
    # Blend products engaged with together into the served ranking, as much as the run's
    # validation split says helps (none where it does not: training/ml/neighbours.py;
    # docs/model.md "The neighbour blend"). False: the model's scores alone.
    "NEIGHBOURS": env_bool("RECSITE_TRAINING_NEIGHBOURS", True),
    "SEED": 42,
    "MAX_VALIDATION_CUSTOMERS": 2000,
    # To which moment training targets are decayed: "customer" (each customer's newest
    # event), "shop" (the newest event of all) or "none"; docs/model.md has the measurements.
    "TARGET_RECENCY": env_str("RECSITE_TARGET_RECENCY", "customer"),
    # Evaluation (DESIGN.md): the held-out item against this many sampled products.
    "SAMPLED_NEGATIVES": 99,
    # The gate: promote only if full-ranking NDCG@10 beats popularity and is at most
    # this much (absolute) below the promoted model's on the same held-out split.
    "PROMOTION_TOLERANCE": env_float("RECSITE_PROMOTION_TOLERANCE", 0.01),
    # Fewer held-out customers than this and the metrics are noise: the run is rejected.
    "MIN_TEST_CUSTOMERS": env_int("RECSITE_MIN_TEST_CUSTOMERS", 10),
    # A running worker writes a heartbeat this often; the sweeper (every
    # RECSITE_SWEEP_EVERY_SECONDS) fails a running run whose heartbeat is older than
    # STALE_SECONDS, so a kill -9 is noticed within STALE + SWEEP seconds (90 s).
    "HEARTBEAT_SECONDS": env_float("RECSITE_TRAINING_HEARTBEAT_SECONDS", 10.0),
    "STALE_SECONDS": env_float("RECSITE_TRAINING_STALE_SECONDS", 60.0),
    # A run no worker has picked up for this long (no worker, lost message) is failed.
    "QUEUED_TIMEOUT_SECONDS": env_float("RECSITE_TRAINING_QUEUED_TIMEOUT_SECONDS", 1800.0),
    # Celery time limits of the retrain task; the Redis visibility timeout must exceed
    # TIME_LIMIT (checked at start-up, training.checks).
    "SOFT_TIME_LIMIT": env_int("RECSITE_TRAINING_SOFT_TIME_LIMIT", 3600),
    "TIME_LIMIT": env_int("RECSITE_TRAINING_TIME_LIMIT", 3900),
    # How often a serving process asks which version is promoted (seconds); a promotion
    # reaches every process within this time.
    "SERVING_REFRESH_SECONDS": env_float("RECSITE_SERVING_REFRESH_SECONDS", 2.0),
    # Torch threads in a serving process. One customer x 10,000 products takes ~2 ms on
    # one thread; more threads per web process, next to other web processes and workers
    # on the same cores, measured 20x slower (oversubscription), not faster.
    "SERVING_TORCH_THREADS": env_int("RECSITE_SERVING_TORCH_THREADS", 1),
    # Torch threads of a training run (0: torch's default, one per core). With 2 threads on
    # 2 busy cores, every op waits for the slower thread: training ran 27x slower than
    # with 1 (bench/training.py, load ~7); a worker shares its cores with web processes.
    "TORCH_THREADS": env_int("RECSITE_TRAINING_TORCH_THREADS", 1),
}

# Precomputed recommendations (docs/precompute.md): after each promotion or rollback,
# workers write every model customer's top RECSITE_PRECOMPUTE_K into the cache, and the
# API answers a plain request (no category, seen products left out, k <= that) from
# there. On by default only with Redis: the embedded file cache keeps 300 entries
# (OPTIONS MAX_ENTRIES) and reads a file per request, so it would not pay there.
RECSITE_PRECOMPUTE = env_bool("RECSITE_PRECOMPUTE", bool(REDIS_URL))
RECSITE_PRECOMPUTE_K = env_int("RECSITE_PRECOMPUTE_K", 20)
if not 1 <= RECSITE_PRECOMPUTE_K <= 100:  # 100: the API's largest k (training.serving.MAX_K)
    raise ImproperlyConfigured(f"RECSITE_PRECOMPUTE_K must be 1 to 100, got {RECSITE_PRECOMPUTE_K}.")
# Customers per chunk task: one cache round trip and one engagement query each.
RECSITE_PRECOMPUTE_CHUNK = env_int("RECSITE_PRECOMPUTE_CHUNK", 2000)
if RECSITE_PRECOMPUTE_CHUNK < 1:
    raise ImproperlyConfigured(f"RECSITE_PRECOMPUTE_CHUNK must be at least 1, got {RECSITE_PRECOMPUTE_CHUNK}.")
# Only customers with engagement in the last N days (0: every customer the model knows).
RECSITE_PRECOMPUTE_ACTIVE_DAYS = env_float("RECSITE_PRECOMPUTE_ACTIVE_DAYS", 0.0)
# Lists outlive their version by at most this (the next promotion writes new keys).
RECSITE_PRECOMPUTE_TTL_SECONDS = env_int("RECSITE_PRECOMPUTE_TTL_SECONDS", 3 * 24 * 3600)
# Torch threads of a chunk task: one per worker process, so N workers use N cores.
RECSITE_PRECOMPUTE_TORCH_THREADS = env_int("RECSITE_PRECOMPUTE_TORCH_THREADS", 1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
