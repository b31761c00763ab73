"""The TLS part of the web config: ``tls_server_config`` as data, and the server's SSLContext
built from it (reading the certificate, key and CA files it names), and the client-SAN check.

Where Python's ``ssl`` cannot do what Go's ``crypto/tls`` does, pqd.http.webconfig's docstring says
what is mapped to what, or refused.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from pqd.errors import SECRET, ConfigError, read_config_bytes

__all__ = [
    "CIPHER_SUITES",
    "CURVES",
    "MAX_FILE_BYTES",
    "TLS_VERSIONS",
    "TLSServerConfig",
    "peer_matches_sans",
    "ssl_context",
]

#: A web config or a PEM file is a few kilobytes; refuse to read /dev/zero or a log file by mistake.
MAX_FILE_BYTES: Final = 1 << 20

TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's tls.CipherSuites() (the ones without known security issues), which is all the toolkit
# accepts, with OpenSSL's names. TLS 1.3 suites map to None: neither Go nor OpenSSL lets them be
# configured this way, so they are accepted and have no effect, as in Go.
CIPHER_SUITES: Final[Mapping[str, str | None]] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
CURVES: Final = ("CurveP256", "CurveP384", "CurveP521", "X25519")
_INLINE: Final = "<inline PEM>"  # shown instead of an inline certificate in errors


@dataclass(frozen=True)
class TLSServerConfig:
    """``tls_server_config``; file paths are already joined with the config file's directory."""

    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = None  # inline PEM, instead of cert_file
    key: str | None = field(default=None, repr=False)  # inline PEM, instead of key_file
    client_ca_file: str | None = None
    client_ca: str | None = None  # inline PEM, instead of client_ca_file
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()  # Go names, as written
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()  # validated, not applied (see pqd.http.webconfig)


def ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server context for ``tls``: reads the certificate, key and CA files now, so a missing or
    broken file is a ConfigError here (at start, or when a rotated file is picked up)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _set_protocol(ctx, tls)
    _load_key_pair(ctx, tls)
    _set_client_auth(ctx, tls)
    return ctx


def _set_protocol(ctx: ssl.SSLContext, tls: TLSServerConfig) -> None:
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    # pqd speaks HTTP/1.1 only; saying so lets an HTTP/2-capable client settle on it at once.
    ctx.set_alpn_protocols(["http/1.1"])
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    openssl_names = [n for n in (CIPHER_SUITES[c] for c in tls.cipher_suites) if n is not None]
    if openssl_names:
        try:
            ctx.set_ciphers(":".join(openssl_names))
        except ssl.SSLError as err:
            raise ConfigError(
                "tls_server_config.cipher_suites",
                list(tls.cipher_suites),
                f"none of these is available in this OpenSSL: {_ssl_problem(err)}",
            ) from None


def _load_key_pair(ctx: ssl.SSLContext, tls: TLSServerConfig) -> None:
    cert_where = "tls_server_config.cert_file" if tls.cert_file else "tls_server_config.cert"
    key_where = "tls_server_config.key_file" if tls.key_file else "tls_server_config.key"
    cert_text = _read_pem(tls.cert_file, cert_where) if tls.cert_file else (tls.cert or "")
    key_text = _read_pem(tls.key_file, key_where) if tls.key_file else (tls.key or "")
    cert_shown = tls.cert_file or _INLINE
    key_shown = tls.key_file or SECRET
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(cert_where, cert_shown, "holds no PEM certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_text)
    except (ssl.SSLError, ValueError) as err:
        problem = _ssl_problem(err) if isinstance(err, ssl.SSLError) else str(err)
        raise ConfigError(
            cert_where, cert_shown, f"not a valid PEM certificate: {problem}"
        ) from None

    def no_passphrase() -> bytes:
        # Without this, OpenSSL would prompt for a passphrase on the terminal and block.
        raise ConfigError(key_where, key_shown, "the key is encrypted; pqd needs it unencrypted")

    with _pem_path(cert_text) as cert_path, _pem_path(key_text) as key_path:
        try:
            ctx.load_cert_chain(cert_path, key_path, password=no_passphrase)
        except ssl.SSLError as err:
            if err.reason == "KEY_VALUES_MISMATCH":
                problem = "does not match the certificate"
            else:
                problem = f"not a valid PEM private key: {_ssl_problem(err)}"
            raise ConfigError(key_where, key_shown, problem) from None


def _set_client_auth(ctx: ssl.SSLContext, tls: TLSServerConfig) -> None:
    if tls.client_auth_type == "RequireAndVerifyClientCert":
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif tls.client_auth_type == "VerifyClientCertIfGiven":
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
        return
    if tls.client_ca_file:
        where = "tls_server_config.client_ca_file"
        ca_text, shown = _read_pem(tls.client_ca_file, where), tls.client_ca_file
    elif tls.client_ca:
        where, ca_text, shown = "tls_server_config.client_ca", tls.client_ca, _INLINE
    else:
        # Go verifies client certificates against the system roots when no CA is given.
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return
    try:
        ctx.load_verify_locations(cadata=ca_text)
    except (ssl.SSLError, ValueError) as err:
        problem = _ssl_problem(err) if isinstance(err, ssl.SSLError) else str(err)
        raise ConfigError(where, shown, f"no usable CA certificate: {problem}") from None


def _read_pem(path: str, where: str) -> str:
    data = read_config_bytes(path, MAX_FILE_BYTES, field=where, cannot="cannot read")
    return data.decode("latin-1")  # PEM is ASCII; latin-1 never fails and keeps bytes


@contextmanager
def _pem_path(text: str) -> Iterator[str]:
    """A path holding ``text`` for as long as needed: ssl loads keys only from files.

    An anonymous memory file when the platform has one (the key never touches a disk), else a
    private temporary directory.
    """
    memfd_create: Callable[..., int] | None = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("pqd-pem", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, text.encode("latin-1", "replace"))
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="pqd-pem-") as tmp:
        path = os.path.join(tmp, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(text)
        yield path


def _ssl_problem(err: ssl.SSLError) -> str:
    return str(err.reason or err.strerror or err).replace("_", " ").lower()


def peer_matches_sans(peer_cert: Mapping[str, object], allowed: tuple[str, ...]) -> bool:
    """Whether a verified client certificate (``SSLObject.getpeercert()``) has a subject
    alternative name in ``allowed``, compared as the toolkit does (DNS, email, IP, URI)."""
    wanted = {_normal_san(s) for s in allowed}
    sans = peer_cert.get("subjectAltName", ())
    if not isinstance(sans, tuple):
        return False
    for entry in sans:
        if (
            isinstance(entry, tuple)
            and len(entry) == 2
            and isinstance(entry[1], str)
            and _normal_san(entry[1].strip()) in wanted
        ):
            return True
    return False


def _normal_san(value: str) -> str:
    # Python prints IPv6 addresses uncompressed and upper-case, Go compressed and lower-case.
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value
