"""Configuration from environment variables prefixed ``PLANB_``.

Every variable is documented in docs/reference/configuration.md (generated from SETTINGS).  Defaults suit one machine: an
embedded SQLite file under the instance folder and a secret key generated
once and kept there (never a constant in code).

Each setting has a parser.  ``load()`` parses them all when the app (or a
``planb`` command) starts and refuses to start on any value it cannot use,
with one line per bad setting::

    PLANB_PORT: 'http' is not a whole number; expected a port number from 1 to 65535, e.g. 8080

A value that is set but blank counts as unset (the default applies).  Nothing
falls back silently to a default, or to "off", because a value was misspelt.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn

ENV_PREFIX = "PLANB_"

# gunicorn's exit status for "App failed to load": its master halts, instead of restarting
# workers that would fail the same way forever (see ``exit_app_failed_to_load``).
GUNICORN_APP_LOAD_ERROR = 4


class ConfigError(SystemExit):
    """One or more settings are unusable: start-up stops with their messages, no traceback.

    A ``SystemExit`` (status 1, the messages on stderr) so that every entry point —
    ``create_app``, the ``planb`` commands, ``gunicorn wsgi:app`` — ends the same way.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def exit_app_failed_to_load(error: ConfigError) -> NoReturn:
    """End the process whose app could not be built (``wsgi.py``, a ``planb serve`` worker).

    The messages go to stderr and the exit status is gunicorn's "App failed to load", on
    which its master halts instead of restarting workers that would fail the same way
    forever.  Under gunicorn only one worker per master does so: reaping a second such
    worker while it halts makes gunicorn die with a traceback of its own (HaltServer), so
    the others exit quietly with status 1, which the halting master just notes.
    """
    if "gunicorn.arbiter" in sys.modules:
        folder = Path(tempfile.gettempdir())
        marker = folder / f"planb-app-failed-{os.getppid()}"
        for old in folder.glob("planb-app-failed-*"):  # left by earlier failed starts
            try:
                if old != marker and time.time() - old.stat().st_mtime > 60:
                    old.unlink()
            except OSError:
                pass
        if not _first_to_fail(marker):
            raise SystemExit(1)
    print(error, file=sys.stderr, flush=True)
    raise SystemExit(GUNICORN_APP_LOAD_ERROR)


def _first_to_fail(marker: Path) -> bool:
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return True
    except FileExistsError:
        try:
            if time.time() - marker.stat().st_mtime < 60:
                return False
            marker.touch()  # left by a master long gone whose pid this one reuses
        except OSError:
            pass
        return True
    except OSError:  # no usable temporary folder: every worker says it
        return True


# ---------------------------------------------------------------- parsers
# Each takes the stripped, non-blank text and returns the value, or raises ValueError
# saying what is wrong with it (the setting adds "; expected ...").

def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 60 else raw[:57] + "...")


def _text(raw: str) -> str:
    return raw


def _choice(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ValueError(f"{_shown(raw)} is not one of the accepted values")
        return value
    return parse


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
BOOLEAN_SPELLINGS = "true or false (also 1/0, yes/no, on/off)"


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{_shown(raw)} is neither true nor false")


def _auto_or_boolean(raw: str) -> str:
    """``auto``, or a boolean spelled any usual way: normalised to 'auto', 'true' or 'false'."""
    if raw.lower() == "auto":
        return "auto"
    try:
        return "true" if _boolean(raw) else "false"
    except ValueError:
        raise ValueError(f"{_shown(raw)} is not one of the accepted values") from None


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{_shown(raw)} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise ValueError(f"{value} is out of range")
        return value
    return parse


def _number(low: float, high: float, *, low_inclusive: bool = True) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{_shown(raw)} is not a number") from None
        too_low = value < low if low_inclusive else value <= low
        if not math.isfinite(value) or too_low or value > high:
            raise ValueError(f"{_shown(raw)} is out of range")
        return value
    return parse


def _database_url(raw: str) -> str:
    # Never echo the value: it may hold a password.
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = sa.make_url(raw)
    except ArgumentError:
        raise ValueError("the value is not a database URL") from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"the database kind {backend!r} is not supported")
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"the driver {url.drivername!r} is unknown") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        raise ValueError(f"the Python package of the driver {dialect.driver!r} is not installed") from None
    database = url.database or ""
    if backend == "sqlite" and database and database != ":memory:" and not url.query.get("uri"):
        folder = Path(database).parent
        if not folder.is_dir():
            raise ValueError(f"the SQLite file's folder {str(folder)!r} does not exist")
    return raw


def _rate_limit(raw: str) -> str:
    from limits import parse_many

    try:
        limits = parse_many(raw)
    except ValueError:
        raise ValueError(f"{_shown(raw)} is not a rate limit") from None
    if not limits or any(limit.amount < 1 for limit in limits):
        raise ValueError(f"{_shown(raw)} allows no attempt at all")
    return raw


def _storage_uri(raw: str) -> str:
    # Only the scheme is echoed: the rest may hold a password.
    import importlib.util
    from urllib.parse import urlparse

    from limits._storage_scheme import SCHEMES

    scheme = urlparse(raw).scheme
    if "://" not in raw or scheme not in SCHEMES or scheme.startswith("async+"):
        raise ValueError(f"the scheme {scheme or raw.split(':', 1)[0]!r} is not a storage Flask-Limiter knows")
    needs = getattr(SCHEMES[scheme], "DEPENDENCIES", None) or []
    if needs and not any(importlib.util.find_spec(package) for package in needs):
        raise ValueError(f"{scheme}:// needs the Python package {' or '.join(needs)}, which is not installed")
    return raw


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def _host(raw: str) -> str:
    try:
        ipaddress.ip_address(raw)
        return raw
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(raw):
        raise ValueError(f"{_shown(raw)} is not an IP address or host name")
    return raw


def _instance_path(raw: str) -> str:
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{_shown(raw)} is a file, not a folder")
    return raw


def _snapshot_dir(raw: str) -> str:
    """``off``, or a folder for the impact graph's snapshots."""
    if raw.lower() == "off":
        return "off"
    return _instance_path(raw)


def _listed(item: Callable[[str], Any] | None = None) -> Callable[[str], list[Any]]:
    """A comma-separated list (blanks dropped), each item checked by ``item``."""
    def parse(raw: str) -> list[Any]:
        items = [part.strip() for part in raw.split(",") if part.strip()]
        return [item(part) for part in items] if item else items
    return parse


def _pattern(pattern: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def parse(raw: str) -> str:
        if not compiled.fullmatch(raw):
            raise ValueError(f"{_shown(raw)} is not {what}")
        return raw
    return parse


def _aws_resource_type(raw: str) -> str:
    from inventory.choices import AWS_RESOURCE_TYPES  # the collector's list too: one source of truth

    if raw.lower() not in AWS_RESOURCE_TYPES:
        raise ValueError(f"{_shown(raw)} is not a resource type Plan B collects")
    return raw.lower()


def _context_name(raw: str) -> str:
    if any(ch.isspace() or not ch.isprintable() for ch in raw) or len(raw) > 253:
        raise ValueError(f"{_shown(raw)} is not a kubeconfig context name")
    return raw


def _http_url(raw: str) -> str:
    from urllib.parse import urlparse

    parts = urlparse(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{_shown(raw)} is not an http(s) URL")
    return raw



def _external_url(raw: str) -> str:
    """The address users reach Plan B at: an http(s) URL without query or fragment, no trailing slash."""
    from urllib.parse import urlparse

    parts = urlparse(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{_shown(raw)} is not an http(s) URL")
    if parts.query or parts.fragment or parts.params:
        raise ValueError(f"{_shown(raw)} has a query or fragment")
    return raw.rstrip("/")


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.1``, ``::1``, ``[::1]``)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def https_or_loopback_url(raw: str) -> str:
    """An https URL, or plain http to a loopback address only (a token must not cross a network
    in clear); the URL without a trailing slash.  ValueError saying what is wrong otherwise."""
    from urllib.parse import urlparse

    parts = urlparse(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{_shown(raw)} is not an http(s) URL")
    if parts.scheme == "http":
        if not is_loopback_host(parts.hostname):
            raise ValueError(f"{_shown(raw)} would send the API token in clear: use https "
                             "(plain http is accepted for loopback addresses only)")
    return raw.rstrip("/")


_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,49}|\*")


def _stale_hours(raw: str) -> dict[str, float]:
    """Hours a collection source may stay silent: ``48`` (every source) or per source,
    ``aws=24,azure=24,*=72`` (``*``: every other source).  Returned as {source or '*': hours}."""
    hours = _number(0, 87600, low_inclusive=False)
    result: dict[str, float] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        source, sep, value = part.partition("=")
        if not sep:
            source, value = "*", part
        source = source.strip().lower()
        if not _SOURCE_NAME.fullmatch(source):
            raise ValueError(f"{_shown(source)} is not a source name")
        if source in result:
            raise ValueError(f"{source!r} is given twice")
        result[source] = hours(value.strip())
    if not result:
        raise ValueError("no hours given")
    return result


def _https_issuer(raw: str) -> str:
    """An OpenID Connect issuer: https, or http on a loopback address (a local test IdP)."""
    from urllib.parse import urlparse

    parts = urlparse(raw)
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{_shown(raw)} is not an issuer URL")
    loopback = parts.hostname == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        pass
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"{_shown(raw)} is not an https URL (http only on a loopback address)")
    return raw.rstrip("/")


_ROLE_NAMES = ("viewer", "editor", "admin")


def _role_map(raw: str) -> dict[str, str]:
    """IdP group -> Plan B role, ``planb-admins=admin,planb-editors=editor``."""
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        group, sep, role = part.rpartition("=")
        group, role = group.strip(), role.strip().lower()
        if not sep or not group:
            raise ValueError(f"{_shown(part)} is not GROUP=ROLE")
        if role not in _ROLE_NAMES:
            raise ValueError(f"{_shown(role)} is not a role")
        if group in mapping:
            raise ValueError(f"the group {group!r} is given twice")
        mapping[group] = role
    return mapping
FALCON_CLOUDS = ("us-1", "us-2", "eu-1", "us-gov-1")


def _falcon_cloud(raw: str) -> str:
    if raw.lower() in FALCON_CLOUDS:
        return raw.lower()
    if "://" not in raw:
        raise ValueError(f"{_shown(raw)} is not a Falcon cloud name or URL")
    return https_or_loopback_url(raw)


    if parts.scheme == "http":
        if not is_loopback_host(parts.hostname):
            raise ValueError(f"{_shown(raw)} would send the API token in clear: use https "
                             "(plain http is accepted for loopback addresses only)")
    return raw.rstrip("/")


# ---------------------------------------------------------------- the settings

@dataclass(frozen=True)
class Setting:
    default: str | None
    description: str
    expected: str = "any text"
    parse: Callable[[str], Any] = _text


_DEADLINE = dict(expected="a number of seconds of at least 1, e.g. 900", parse=_number(1, 10**7))

# name (without the prefix) -> Setting; docs/reference/configuration.md is generated from this.
SETTINGS: dict[str, Setting] = {
    "DATABASE_URL": Setting(
        None, "SQLAlchemy URL; default sqlite:///<instance>/planb.sqlite3",
        "a SQLite or PostgreSQL URL such as sqlite:////var/lib/planb/planb.sqlite3 or "
        "postgresql+psycopg://planb:secret@db.example:5432/planb", _database_url),
    "SECRET_KEY": Setting(None, "Session/CSRF signing key; generated into <instance>/secret_key when unset"),
    "TOKEN_HMAC_KEY": Setting(None, "Key for API-token HMACs; defaults to one derived from the secret key"),
    "INSTANCE_PATH": Setting(
        None, "Folder for the SQLite file, secret key and backups; default ./instance",
        "a folder Plan B can create and write to, e.g. /var/lib/planb", _instance_path),
    "LOG_LEVEL": Setting("INFO", "Logging level (DEBUG, INFO, WARNING, ERROR)",
                         "DEBUG, INFO, WARNING or ERROR", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True)),
    "LOG_FORMAT": Setting("json", "'json' for structured logs, 'text' for plain lines",
                          "json or text", _choice("json", "text")),
    "SESSION_HOURS": Setting("12", "Hours a login session lasts",
                             "a number of hours above 0 and at most 8760, e.g. 12",
                             _number(0, 8760, low_inclusive=False)),
    "MAX_CONTENT_LENGTH": Setting(str(16 * 1024 * 1024), "Largest accepted request body in bytes (413 beyond)",
                                  "a whole number of bytes, at least 1, e.g. 16777216", _integer(1)),
    "SECURE_COOKIES": Setting("auto", "'auto' (Secure when served over TLS), 'true' or 'false'",
                              "auto, true or false (true/false also as 1/0, yes/no, on/off)", _auto_or_boolean),
    "LOGIN_RATE_LIMIT": Setting("10 per minute", "Flask-Limiter limit on login attempts per client",
                                "a rate limit such as '10 per minute' (several: '10 per minute; 100 per hour')",
                                _rate_limit),
    "RATELIMIT_STORAGE_URI": Setting("memory://", "Flask-Limiter storage (e.g. redis://127.0.0.1:6379)",
                                     "memory:// or a Flask-Limiter storage URI such as redis://127.0.0.1:6379",
                                     _storage_uri),
    "TRUSTED_PROXIES": Setting("0", "Reverse proxies in front of the app whose X-Forwarded-* headers are trusted",
                               "a whole number of proxies, 0 or more, e.g. 1 behind one nginx", _integer(0)),
    "IMPACT_REBUILD_WAIT": Setting(
        "2", "Seconds a blast-radius request waits for the graph rebuild it started after "
             "an inventory change before answering from the previous graph (marked so)",
        "a number of seconds from 0 to 999999, e.g. 2", _number(0, 999999)),
    "GRAPH_SNAPSHOT_DIR": Setting(
        None, "Folder for the impact graph's on-disk snapshots (memory-mapped by every process); "
              "default <instance>/graph-snapshots; 'off' for none",
        "a folder Plan B can create and write to (private to its user), e.g. /var/lib/planb/graph, "
        "or off", _snapshot_dir),
    "IMPACT_KERNEL": Setting(
        "auto", "'auto': answer with NumPy while the compiled (Numba) kernel loads in the background; "
                "'numpy': never load Numba; 'compiled': the first query loads it and waits",
        "auto, numpy or compiled", _choice("auto", "numpy", "compiled")),
    "HOST": Setting("127.0.0.1", "Address `planb demo` / `planb serve` listens on",
                    "an IP address or host name without scheme or port, e.g. 127.0.0.1 or 0.0.0.0", _host),
    "PORT": Setting("8080", "Port `planb demo` / `planb serve` listens on",
                    "a port number from 1 to 65535, e.g. 8080", _integer(1, 65535)),
    "WORKERS": Setting("2", "gunicorn worker processes of `planb serve` (each with 4 threads)",
                       "a whole number of processes from 1 to 64, e.g. 4", _integer(1, 64)),
    # What `planb collect all` collects (read by the collectors' from_config()).
    "COLLECT_AWS_REGIONS": Setting(
        None, "AWS regions to collect, comma-separated ('all': every enabled region)",
        "comma-separated AWS region names such as us-east-1,eu-west-1, or all",
        _listed(_pattern(r"all|[a-z]{2}(-[a-z]+)+-\d+", "an AWS region name"))),
    "COLLECT_AWS_PROFILES": Setting(None, "AWS CLI profiles to collect, comma-separated",
                                    "comma-separated AWS profile names", _listed()),
    "COLLECT_AWS_ROLE_ARNS": Setting(
        None, "IAM roles to assume and collect, comma-separated",
        "comma-separated IAM role ARNs such as arn:aws:iam::123456789012:role/planb-reader",
        _listed(_pattern(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+", "an IAM role ARN"))),
    "COLLECT_AWS_RESOURCE_TYPES": Setting(
        None, "AWS resource types to collect, comma-separated (default: all)",
        "comma-separated types from ec2, lambda, elbv2, rds, eks", _listed(_aws_resource_type)),
    "COLLECT_AWS_DEADLINE": Setting(None, "Seconds allowed per AWS scope", **_DEADLINE),
    "COLLECT_AWS_SSM": Setting(None, "Whether to read installed software through SSM (default true)",
                               BOOLEAN_SPELLINGS, _boolean),
    "COLLECT_AZURE_SUBSCRIPTIONS": Setting(
        None, "Azure subscription ids to collect, comma-separated",
        "comma-separated subscription ids such as 8f2c6b1e-3d4a-4b5c-9e7f-0a1b2c3d4e5f",
        _listed(_pattern(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
                         "a subscription id"))),
    "COLLECT_AZURE_DEADLINE": Setting(None, "Seconds allowed per Azure scope", **_DEADLINE),
    "AZURE_BASE_URL": Setting(None, "Azure Resource Manager endpoint (sovereign clouds)",
                              "an https URL such as https://management.chinacloudapi.cn", _http_url),
    "COLLECT_KUBERNETES_CONTEXTS": Setting(
        None, "Kubeconfig contexts `planb collect all` collects, comma-separated ($KUBECONFIG or ~/.kube/config)",
        "comma-separated kubeconfig context names such as prod-eks,staging-aks", _listed(_context_name)),
    "COLLECT_KUBERNETES_CLUSTER_NAME": Setting(
        None, "Name of the cluster Plan B runs in; set it to collect that cluster through the pod's "
              "service account in `planb collect all`",
        "a cluster name of letters, digits, '.', '_' and '-' (at most 100), e.g. payments-prod",
        _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", "a cluster name")),
    "COLLECT_HOST": Setting(None, "Whether `planb collect all` collects this machine (default true)",
                            BOOLEAN_SPELLINGS, _boolean),
    "COLLECT_HOST_NAME": Setting(None, "Name this machine is recorded under (default: its host name)"),
    "COLLECT_OSQUERY_PATHS": Setting(None, "osquery result files or globs, separated by commas or the OS "
                                           "path separator"),
    # Notifications (docs/how-to/notifications.md).
    "EXTERNAL_URL": Setting(None, "The address people reach Plan B at, for links in notifications",
                            "an http(s) URL without query, such as https://planb.example.com", _external_url),
    "COLLECTION_STALE_HOURS": Setting(
        "48", "Hours a collection source may stay silent before collection.stale is sent",
        "hours above 0 for every source (48) or per source (aws=24,azure=24,*=72)", _stale_hours),
    "WEBHOOK_WORKER": Setting("true", "Whether each web worker process delivers queued notifications",
                              BOOLEAN_SPELLINGS, _boolean),
    "WEBHOOK_TIMEOUT": Setting("10", "Seconds a webhook receiver has to answer",
                               "a number of seconds from 1 to 120, e.g. 10", _number(1, 120)),
    "WEBHOOK_MAX_ATTEMPTS": Setting("8", "Delivery attempts before a message goes to the dead-letter list",
                                    "a whole number from 1 to 50, e.g. 8", _integer(1, 50)),
    # Single sign-on (docs/how-to/sso.md).
    "OIDC_ISSUER": Setting(None, "OpenID Connect issuer URL (turns single sign-on on)",
                           "an https URL such as https://login.example.com/realms/planb", _https_issuer),
    "OIDC_CLIENT_ID": Setting(None, "Client id registered at the identity provider"),
    "OIDC_CLIENT_SECRET": Setting(None, "Client secret registered at the identity provider"),
    "OIDC_ROLE_MAP": Setting(None, "IdP group -> Plan B role, e.g. planb-admins=admin,planb-editors=editor",
                             "comma-separated GROUP=ROLE pairs, roles viewer, editor or admin", _role_map),
    "OIDC_GROUPS_CLAIM": Setting("groups", "ID-token claim holding the user's groups",
                                 "a claim name such as groups or roles",
                                 _pattern(r"[A-Za-z0-9_:./-]{1,100}", "a claim name")),
    "OIDC_DEFAULT_ROLE": Setting("viewer", "Role of a single-sign-on user in no mapped group ('none' refuses them)",
                                 "viewer, editor or none", _choice("viewer", "editor", "none")),
    "OIDC_PROVIDER_NAME": Setting(None, "Name on the login button ('Sign in with <name>'); default: the issuer's host"),
    "OIDC_SCOPES": Setting("openid email profile", "Scopes requested from the identity provider",
                           "space-separated scopes including openid",
                           _pattern(r"(?=(?:.* )?openid(?: .*)?$)[\x21-\x7e]+(?: [\x21-\x7e]+)*",
                                    "a space-separated scope list with openid")),
    "LOCAL_LOGIN": Setting("all", "Who may log in with a local password: all, admins (break-glass) or none",
                           "all, admins or none", _choice("all", "admins", "none")),
    # Agent consoles: secrets only from the vendors' own variables (FALCON_CLIENT_ID/_SECRET,
    # AZURE_* for azure-identity, S1_API_TOKEN), never from PLANB_* settings.
    "COLLECT_CROWDSTRIKE": Setting(None, "Whether `planb collect all` reads the Falcon console (default: "
                                         "when PLANB_COLLECT_CROWDSTRIKE_BASE_URL is set)",
                                   BOOLEAN_SPELLINGS, _boolean),
    "COLLECT_CROWDSTRIKE_BASE_URL": Setting(
        None, "Falcon cloud (us-1, us-2, eu-1, us-gov-1) or API URL",
        "one of us-1, us-2, eu-1, us-gov-1, or an https URL such as https://api.eu-1.crowdstrike.com",
        _falcon_cloud),
    "COLLECT_CROWDSTRIKE_FILTER": Setting(None, "FQL filter for the Falcon hosts, e.g. platform_name:'Windows'"),
    "COLLECT_DEFENDER": Setting(None, "Whether `planb collect all` reads Microsoft Defender for Endpoint "
                                      "(default: when PLANB_COLLECT_DEFENDER_BASE_URL is set)",
                                BOOLEAN_SPELLINGS, _boolean),
    "COLLECT_DEFENDER_BASE_URL": Setting(
        None, "Defender for Endpoint API URL (default https://api.securitycenter.microsoft.com)",
        "an https URL such as https://api.securitycenter.microsoft.com or https://api-gcc.securitycenter.microsoft.us",
        https_or_loopback_url),
    "COLLECT_SENTINELONE_BASE_URL": Setting(
        None, "SentinelOne management console URL (enables the SentinelOne source)",
        "an https URL such as https://usea1-acme.sentinelone.net", https_or_loopback_url),
    "COLLECT_FLEET_URL": Setting(None, "Fleet server `planb collect all` reads (the token in FLEET_API_TOKEN)",
                                 "an https URL such as https://fleet.example.com (http only for 127.0.0.1)",
                                 https_or_loopback_url),
    "COLLECT_FLEET_PER_PAGE": Setting(None, "Fleet hosts per request, each with its software (default 100)",
                                      "a whole number from 1 to 10000, e.g. 100", _integer(1, 10_000)),
    "COLLECT_FLEET_SOFTWARE": Setting(None, "Whether to read each Fleet host's software (default true)",
                                      BOOLEAN_SPELLINGS, _boolean),
    "RUN_RETENTION_DAYS": Setting("90", "Days of collection-run history kept (each scope's latest state "
                                        "is always kept)",
                                  "a whole number of days from 1 to 36500, e.g. 90", _integer(1, 36500)),
    "RUN_LEASE_SECONDS": Setting("300", "Seconds a collection run's lease lasts without a heartbeat; a run "
                                        "whose process died is marked failed after it",
                                 "a number of seconds from 1 to 86400, e.g. 300", _number(1, 86400)),
}


def _problem(name: str, reason: str) -> str:
    return f"{ENV_PREFIX}{name}: {reason}; expected {SETTINGS[name].expected}"


def _raw(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(ENV_PREFIX + name)
    return value if value is not None and value.strip() else None


def parse(name: str, raw: str) -> Any:
    """``raw`` read as the value of setting ``name``; ConfigError (naming ``PLANB_<name>``) if it cannot be."""
    setting = SETTINGS[name]
    # Keys are taken verbatim; everything else may carry stray spaces from an env file.
    text = raw if setting.parse is _text else raw.strip()
    try:
        return setting.parse(text)
    except ValueError as exc:
        raise ConfigError([_problem(name, str(exc))]) from None


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The parsed value of one setting (its default when unset or blank; None without one)."""
    raw = _raw(name, os.environ if environ is None else environ)
    if raw is None:
        default = SETTINGS[name].default
        return None if default is None else parse(name, default)
    return parse(name, raw)


def env(name: str, default: str | None = None) -> str | None:
    """The raw text of ``PLANB_<name>`` (or ``default``), once it has passed its setting's check."""
    value = os.environ.get(ENV_PREFIX + name, default)
    if name in SETTINGS and value is not None and value.strip():
        parse(name, value)
    return value


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting, parsed; raises ConfigError naming each one that is unusable (not just the first)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name in SETTINGS:
        try:
            values[name] = get(name, environ)
        except ConfigError as exc:
            problems += exc.problems
    problems += _combination_problems(values)
    if problems:
        raise ConfigError(problems)
    return values


OIDC_REQUIRED = ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET")


def _combination_problems(values: Mapping[str, Any]) -> list[str]:
    """Settings that are each fine but unusable together (single sign-on half configured)."""
    problems: list[str] = []
    given = [name for name in OIDC_REQUIRED if values.get(name)]
    if given and len(given) < len(OIDC_REQUIRED):
        for name in OIDC_REQUIRED:
            if name not in given:
                problems.append(f"{ENV_PREFIX}{name}: is not set but {ENV_PREFIX}{given[0]} is; expected "
                                f"all of {', '.join(ENV_PREFIX + n for n in OIDC_REQUIRED)} (single sign-on) "
                                "or none of them")
    if values.get("LOCAL_LOGIN") == "none" and len(given) < len(OIDC_REQUIRED):
        problems.append(f"{ENV_PREFIX}LOCAL_LOGIN: 'none' without single sign-on would let nobody log in; "
                        f"expected all or admins, or set {ENV_PREFIX}OIDC_ISSUER and the client settings")
    return problems


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides (``create_app``'s test config) checked like the environment: text, numbers and
    booleans given for a setting are parsed by its parser; other values are kept as given."""
    checked = dict(overrides)
    problems: list[str] = []
    for name, value in overrides.items():
        if name in SETTINGS and isinstance(value, (str, int, float)) and str(value).strip():
            try:
                checked[name] = parse(name, str(value))
            except ConfigError as exc:
                problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return checked


def default_instance_path() -> Path:
    configured = env("INSTANCE_PATH")
    if configured and configured.strip():
        return Path(configured.strip()).expanduser().resolve()
    return (Path.cwd() / "instance").resolve()


def ensure_instance_path(path: Path) -> None:
    """Create the instance folder, or stop start-up saying why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([_problem("INSTANCE_PATH", f"cannot create {str(path)!r} ({exc.strerror})")]) from None


def load_or_create_secret(instance_path: Path, filename: str = "secret_key") -> str:
    """Read the instance's secret key, creating it (mode 0600) the first time.

    Created under a temporary name and linked into place, so that workers starting
    together agree on one key and none ever reads a half-written file.
    """
    path = instance_path / filename
    try:
        if path.exists():
            return path.read_text().strip()
        instance_path.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        fd, temporary = tempfile.mkstemp(dir=instance_path, prefix=f".{filename}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(key)
            os.link(temporary, path)
        except FileExistsError:  # another process got there first: use its key
            return path.read_text().strip()
        finally:
            os.unlink(temporary)
    except OSError as exc:
        raise ConfigError([_problem("INSTANCE_PATH", f"cannot read or create {str(path)!r} ({exc.strerror})")
                           + " (or set PLANB_SECRET_KEY)"]) from None
    return key


def from_environment(instance_path: Path, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Flask config values built from the environment (or from ``settings``, what ``load()`` returned)."""
    values = from_environment_without_secret(instance_path, settings)
    values["SECRET_KEY"] = values["SECRET_KEY"] or load_or_create_secret(instance_path)
    return values


def from_environment_without_secret(instance_path: Path,
                                    settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Flask config values built from the environment, every setting checked (ConfigError if any is bad)."""
    if settings is None:
        settings = load()
    return {
        "DATABASE_URL": settings["DATABASE_URL"] or f"sqlite:///{instance_path / 'planb.sqlite3'}",
        "SECRET_KEY": settings["SECRET_KEY"],
        "TOKEN_HMAC_KEY": settings["TOKEN_HMAC_KEY"],
        "LOG_LEVEL": settings["LOG_LEVEL"],
        "LOG_FORMAT": settings["LOG_FORMAT"],
        "SESSION_HOURS": settings["SESSION_HOURS"],
        "MAX_CONTENT_LENGTH": settings["MAX_CONTENT_LENGTH"],
        "SECURE_COOKIES": settings["SECURE_COOKIES"],
        "LOGIN_RATE_LIMIT": settings["LOGIN_RATE_LIMIT"],
        "RATELIMIT_STORAGE_URI": settings["RATELIMIT_STORAGE_URI"],
        "TRUSTED_PROXIES": settings["TRUSTED_PROXIES"],
        "HOST": settings["HOST"],
        "PORT": settings["PORT"],
        **{name: settings[name] for name in ("EXTERNAL_URL", "COLLECTION_STALE_HOURS", "WEBHOOK_WORKER",
                                             "WEBHOOK_TIMEOUT", "WEBHOOK_MAX_ATTEMPTS", "LOCAL_LOGIN",
                                             *OIDC_SETTINGS)},
    }


OIDC_SETTINGS = ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_ROLE_MAP", "OIDC_GROUPS_CLAIM",
                 "OIDC_DEFAULT_ROLE", "OIDC_PROVIDER_NAME", "OIDC_SCOPES")
