"""The exporter's two files: ``--config`` (modules) and ``--web-config`` (TLS, users).

Both are YAML read strictly: an unknown key, a wrong type or a value out of bounds is
a ConfigError naming the file and the key, so that a typo never silently weakens a
deployment (exporter-toolkit is as strict with its web configuration). PyYAML
(``yaml.safe_load``) reads them; the ``ssl`` module builds the TLS context.

Modules, as blackbox_exporter's: what a probe sends is chosen by name
(``&module=NAME``), never by parameters of the URL::

    modules:
      default:            # the module of a scrape that names none
        timeout: 5
      field:
        timeout: 8
        auth_code: "4242"
        payload_size: 4096
        strict: false

The web configuration is exporter-toolkit's format (docs/exporter.md, "Running it
safely"): ``tls_server_config`` (cert_file, key_file, client_ca_file,
client_auth_type, min_version, max_version) and ``basic_auth_users`` (bcrypt hashes).
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checker import validate_field
from ..defaults import AUTH_CODE, TIMEOUT
from ..errors import ConfigError, InvalidArgument
from ..protocol import DEFAULT_MAX_BODY
from ..readfile import read_bounded
from ..text import printable, quote_text

MAX_FILE = 1024 * 1024          # bytes: a configuration file larger than this is refused
DEFAULT_MODULE = "default"
DEFAULT_PAYLOAD_SIZE = 16       # what a check sends unless told (16 hex characters)


@dataclass(frozen=True)
class Module:
    """What one probe sends and how long it may take."""

    name: str = DEFAULT_MODULE
    timeout: float = TIMEOUT
    auth_code: str = AUTH_CODE
    payload_size: int = DEFAULT_PAYLOAD_SIZE
    strict: bool = False

    def describe(self) -> list[tuple[str, str]]:
        """(key, value) pairs for the debug page; a non-default auth code is not shown."""
        code = repr(self.auth_code) if self.auth_code == AUTH_CODE else "(set; not shown)"
        return [("timeout", f"{self.timeout:g} s"), ("auth_code", code),
                ("payload_size", f"{self.payload_size} bytes"), ("strict", str(self.strict).lower())]


MODULE_KEYS = ("timeout", "auth_code", "payload_size", "strict")
_REFUSED = "valid YAML refused"       # the note of what StrictLoader refuses


def _strict_loader() -> type:
    """PyYAML's SafeLoader, refusing what a configuration file never needs and what
    would hide a mistake: anchors and aliases (a few hundred bytes of them expand to
    billions of values), and a key given twice (the second would silently win)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(
                    None, None, "anchors and aliases (&name, *name) are not allowed in a "
                    "configuration file", event.start_mark, note=_REFUSED)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:           # unhashable: SafeLoader says so below
                    continue
                seen[key] = line
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {quote_text(key, 40)} is given twice (first at line "
                        f"{first}): remove one", key_node.start_mark, note=_REFUSED)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping in ``path``; ConfigError naming ``what`` (the option) otherwise."""
    import yaml

    where = f"{what} {path}"
    try:
        data = read_bounded(path, MAX_FILE)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror or error}") from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"{where}: larger than {MAX_FILE // 1024} KiB; is it the right file?")
    try:
        loaded = yaml.load(data, Loader=_strict_loader())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        if getattr(error, "note", None) == _REFUSED:
            raise ConfigError(f"{where}: {line}: {problem}") from None
        raise ConfigError(f"{where}: not YAML{' at ' + line if line else ''}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except ValueError as error:     # a date that does not exist, an integer of over 4300 digits
        raise ConfigError(f"{where}: a value it cannot read: {printable(str(error).split(':')[0])}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where}: must be a mapping of keys, not {type(loaded).__name__}")
    return loaded


def shown(value: object) -> str:
    """A value of the file as an error message shows it: a scalar quoted and cut short,
    anything else by its type (its repr could be as long as the file)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return quote_text(value, 40)
    names: dict[type, str] = {dict: "a mapping", list: "a list"}
    return names.get(type(value), f"a {type(value).__name__}")


def _unknown(where: str, mapping: dict[Any, Any], known: tuple[str, ...]) -> None:
    unknown = [key for key in mapping if key not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {shown(unknown[0])} (known: {', '.join(known)})")


def _module(where: str, name: str, settings: Any, max_timeout: float) -> Module:
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: modules.{name} must be a mapping of {', '.join(MODULE_KEYS)}")
    _unknown(f"{where}: modules.{name}", settings, MODULE_KEYS)
    key = f"{where}: modules.{name}"
    timeout = settings.get("timeout", TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not (math.isfinite(timeout) and 0 < timeout <= max_timeout):
        raise ConfigError(f"{key}.timeout must be seconds above 0 and at most {max_timeout:g} "
                          f"(--max-timeout), not {shown(timeout)}")
    auth_code = settings.get("auth_code", AUTH_CODE)
    if not isinstance(auth_code, str):
        raise ConfigError(f"{key}.auth_code: the auth code must be a non-empty string, not "
                          f"{shown(auth_code)} (quote it: \"0042\")")
    try:
        validate_field("auth code", auth_code)
    except InvalidArgument as error:
        raise ConfigError(f"{key}.auth_code: {error} (quote it: \"0042\")") from None
    size = settings.get("payload_size", DEFAULT_PAYLOAD_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= DEFAULT_MAX_BODY:
        raise ConfigError(f"{key}.payload_size must be bytes, 1-{DEFAULT_MAX_BODY}, not {shown(size)}")
    strict = settings.get("strict", False)
    if not isinstance(strict, bool):
        raise ConfigError(f"{key}.strict must be true or false, not {shown(strict)}")
    return Module(name, float(timeout), auth_code, size, strict)


def load_modules(path: str | Path | None, max_timeout: float) -> dict[str, Module]:
    """The modules ``path`` (``--config``) names, by name; ``default`` is always there
    (the file may redefine it). Without a file, only ``default``."""
    modules = {DEFAULT_MODULE: Module(timeout=min(TIMEOUT, max_timeout))}
    if path is None:
        return modules
    where = f"--config {path}"
    data = read_yaml(path, "--config")
    _unknown(where, data, ("modules",))
    entries = data.get("modules")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: give 'modules:', a mapping of module names to their settings")
    for name, settings in entries.items():
        if not isinstance(name, str) or not name or not name.isprintable() or len(name) > 64:
            raise ConfigError(f"{where}: a module name must be printable text of 1-64 characters, "
                              f"not {shown(name)}")
        modules[name] = _module(where, name, settings, max_timeout)
    return modules


# -- the web configuration (exporter-toolkit's format) ----------------------------------------

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's client_auth_type values the ssl module can do, as verify modes;
# RequestClientCert and RequireAnyClientCert accept a certificate without verifying it
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version",
             "max_version", "cert", "key", "client_ca", "cipher_suites", "curve_preferences",
             "prefer_server_cipher_suites", "client_allowed_sans")
_TLS_UNSUPPORTED = ("cert", "key", "client_ca", "cipher_suites", "curve_preferences",
                    "prefer_server_cipher_suites", "client_allowed_sans")
_WEB_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config", "rate_limit")


@dataclass(frozen=True)
class WebConfig:
    """What ``--web-config`` asks for: a TLS context (None: plain HTTP) and the basic
    auth users with their bcrypt hashes (empty: no authentication)."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    path: str = ""


def _tls_context(where: str, settings: Any, base: Path) -> ssl.SSLContext:
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: tls_server_config must be a mapping")
    _unknown(f"{where}: tls_server_config", settings, _TLS_KEYS)
    for key in _TLS_UNSUPPORTED:
        if key in settings:
            raise ConfigError(f"{where}: tls_server_config.{key} is not supported by tpsharness "
                              f"(give files: cert_file, key_file, client_ca_file)")
    for key in ("cert_file", "key_file"):
        if not isinstance(settings.get(key), str) or not settings[key]:
            raise ConfigError(f"{where}: tls_server_config.{key} is required (a file name)")

    def resolve(name: str) -> str:
        return str(base / name)         # relative to the file, as exporter-toolkit does

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # an empty password: an encrypted key fails here instead of prompting on a terminal
        context.load_cert_chain(resolve(settings["cert_file"]), resolve(settings["key_file"]),
                                password=b"")
    except ssl.SSLError as error:
        raise ConfigError(f"{where}: cannot load cert_file {shown(settings['cert_file'])} and key_file "
                          f"{shown(settings['key_file'])} ({error.reason or error}): is the key that "
                          f"certificate's, PEM, and not encrypted?") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot load cert_file {shown(settings['cert_file'])} and key_file "
                          f"{shown(settings['key_file'])}: {error.strerror or error}") from None
    for key, attribute, default in (("min_version", "minimum_version", "TLS12"),
                                    ("max_version", "maximum_version", "TLS13")):
        version = settings.get(key, default)
        if not isinstance(version, str) or version not in _TLS_VERSIONS:
            raise ConfigError(f"{where}: tls_server_config.{key} must be one of "
                              f"{', '.join(_TLS_VERSIONS)}, not {shown(version)}")
        try:
            setattr(context, attribute, _TLS_VERSIONS[version])
        except (ValueError, ssl.SSLError) as error:
            raise ConfigError(f"{where}: tls_server_config.{key} {version}: {error}") from None
    if context.minimum_version > context.maximum_version:
        raise ConfigError(f"{where}: tls_server_config.min_version is above max_version")
    auth = settings.get("client_auth_type", "NoClientCert")
    if not isinstance(auth, str) or auth not in _CLIENT_AUTH:
        why = " (it takes a certificate without verifying it)" if auth in (
            "RequestClientCert", "RequireAnyClientCert") else ""
        raise ConfigError(f"{where}: tls_server_config.client_auth_type {shown(auth)} is not supported"
                          f"{why}: use one of {', '.join(_CLIENT_AUTH)}")
    ca_file = settings.get("client_ca_file")
    if ca_file is not None and auth == "NoClientCert":
        raise ConfigError(f"{where}: client_ca_file is given without a client_auth_type that "
                          f"verifies certificates (RequireAndVerifyClientCert)")
    if auth != "NoClientCert":
        if not isinstance(ca_file, str) or not ca_file:
            raise ConfigError(f"{where}: client_auth_type {auth} needs client_ca_file")
        try:
            context.load_verify_locations(resolve(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"{where}: cannot load client_ca_file {shown(ca_file)}: "
                              f"{getattr(error, 'strerror', None) or error}") from None
        context.verify_mode = _CLIENT_AUTH[auth]
    return context


HASH_RECIPE = ("python3 -c \"import bcrypt, getpass; print(bcrypt.hashpw(getpass.getpass().encode(), "
               "bcrypt.gensalt()).decode())\"")
_BCRYPT_ALPHABET = frozenset("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _hash_problem(hashed: object) -> str | None:
    """Why bcrypt could never match ``hashed`` (a login would fail however right the
    password), without quoting it: a hash in a log is a password to crack."""
    if not isinstance(hashed, str):
        return f"it is {shown(hashed)}"
    if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
        return "it does not begin with $2b$, $2y$ or $2a$"
    cost, dollar, rest = hashed[4:].partition("$")
    if not dollar or not (len(cost) == 2 and cost.isascii() and cost.isdigit() and 4 <= int(cost) <= 31):
        return f"its cost {printable(cost, 10)} is not 04-31"
    if len(rest) != 53 or not _BCRYPT_ALPHABET.issuperset(rest):
        return "after the cost it needs 53 characters of ./A-Za-z0-9"
    return None


def _users(where: str, users: Any) -> dict[str, bytes]:
    if not isinstance(users, dict):
        raise ConfigError(f"{where}: basic_auth_users must be a mapping of user names to bcrypt hashes")
    checked: dict[str, bytes] = {}
    for name, hashed in users.items():
        if not isinstance(name, str) or not name or ":" in name or not name.isprintable():
            raise ConfigError(f"{where}: basic_auth_users: {shown(name)} is not a user name")
        problem = _hash_problem(hashed)
        if problem is not None:
            raise ConfigError(f"{where}: basic_auth_users.{printable(name, 40)} is not a bcrypt hash "
                              f"({problem}): make one with {HASH_RECIPE}")
        checked[name] = str(hashed).encode("ascii")
    return checked


def load_web_config(path: str | Path) -> WebConfig:
    """The ``--web-config`` file: its TLS context and users (ConfigError otherwise)."""
    where = f"--web-config {path}"
    data = read_yaml(path, "--web-config")
    _unknown(where, data, _WEB_KEYS)
    for key in ("http_server_config", "rate_limit"):
        if data.get(key):
            raise ConfigError(f"{where}: {key} is not supported by tpsharness")
    tls = data.get("tls_server_config")
    users = data.get("basic_auth_users")
    return WebConfig(tls=_tls_context(where, tls, Path(path).parent) if tls is not None else None,
                     users=_users(where, users) if users is not None else {}, path=str(path))
