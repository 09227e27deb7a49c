"""Safe download of image bytes over HTTP(S) with urllib3.

* SSRF guard: the host is resolved once, every resolved address must be public (or allowed by
  ``fetch.allow_private_networks`` / ``fetch.allowed_networks``), and the connection goes to that
  validated address (TLS still verifies the certificate against the host name), so DNS
  rebinding cannot swap the address after the check. Every redirect hop is checked again.
* URLs with credentials (``http://user:pass@host/``) are refused rather than stripped: they are a
  common way to disguise the real host and we would never send the credentials anyway.
* Limits: connect and read timeouts per socket operation, a total deadline for the whole
  download (redirects included) enforced by a watchdog that shuts the socket down, and a byte
  cap checked against Content-Length and while streaming.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3.exceptions as u3e
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import BaseHTTPResponse
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatchError

from clothes_search.settings import FetchSettings
from ingestion.errors import ImageFetchError, ImageFetchTimeoutError, ImageTooLargeError, UnsafeURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_MAX_ADDRESSES_TRIED = 4
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchedBytes:
    """The body of a successful download."""

    data: bytes
    url: str  #: the final URL, after redirects
    content_type: str | None  #: as the server claimed it; never trusted for decoding


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # lower-case; IPv6 without brackets
    port: int
    request_target: str  # path?query
    host_header: str


def parse_http_url(url: str) -> _Target:
    """Split and sanity-check an http(s) URL; raise UnsafeURLError for anything odd."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeURLError(f"invalid URL (contains whitespace or control characters): {url!r}", source=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURLError(
            f"unsupported URL scheme {scheme!r} in {url!r}; allowed: http://, https://", source=url
        )
    if "@" in parts.netloc:
        raise UnsafeURLError(
            f"URLs with credentials (user@host) are refused: {url!r}; remove the 'user:password@' part",
            source=url,
        )
    host = parts.hostname
    if not host:
        raise UnsafeURLError(f"invalid URL (no host): {url!r}", source=url)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UnsafeURLError(f"invalid URL (bad port): {url!r}", source=url) from None
    shown_host = f"[{host}]" if ":" in host else host
    default_port = 443 if scheme == "https" else 80
    host_header = shown_host if port == default_port else f"{shown_host}:{port}"
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(url, scheme, host, port, request_target, host_header)


def check_port(target: _Target, settings: FetchSettings) -> None:
    """Raise UnsafeURLError when ``settings.allowed_ports`` is set and does not hold the URL's port."""
    if settings.allowed_ports and target.port not in settings.allowed_ports:
        allowed = ", ".join(str(p) for p in settings.allowed_ports)
        raise UnsafeURLError(
            f"refusing to fetch {target.url!r}: port {target.port} (allowed: {allowed})", source=target.url
        )


def address_class(addr: IPAddress) -> str | None:
    """The kind of non-public address this is ("loopback", "private"...), or None if public."""
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is None and int(addr) >> 32 == 0 and not addr.is_unspecified and not addr.is_loopback:
            return "IPv4-compatible IPv6 (deprecated)"
        if embedded is not None:
            inner = address_class(embedded)
            return f"{inner} (IPv4 {embedded} inside IPv6)" if inner else None
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link-local (cloud metadata endpoint)" if addr in _METADATA else "link-local"
    if addr.is_multicast:
        return "multicast"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "shared/carrier-grade NAT"
    if addr in _METADATA:
        return "private (cloud metadata endpoint)"
    if addr.is_private:
        return "private"
    if addr.is_reserved:
        return "reserved"
    if not addr.is_global:
        return "non-global"
    return None


def _is_allowed(addr: IPAddress, settings: FetchSettings) -> bool:
    candidates = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        candidates.append(addr.ipv4_mapped)
    return any(c in net for c in candidates for net in settings.allowed_networks if net.version == c.version)


def check_address(addr: IPAddress, settings: FetchSettings, *, host: str, url: str) -> None:
    """Raise UnsafeURLError unless ``addr`` is public or allowed by the settings."""
    if settings.allow_private_networks:
        return
    kind = address_class(addr)
    if kind is None or _is_allowed(addr, settings):
        return
    try:
        is_literal = ipaddress.ip_address(host) == addr
    except ValueError:
        is_literal = False
    shown = host if is_literal else f"{host} resolves to {addr}, which"
    network = ipaddress.ip_network(getattr(addr, "ipv4_mapped", None) or addr)
    section = settings.section
    raise UnsafeURLError(
        f"refusing to fetch {url!r}: {shown} is a {kind} address, blocked to prevent server-side request "
        f"forgery. To allow it, add its network to {section}.allowed_networks (e.g. environment "
        f"CLOTHES_SEARCH_{section.upper()}__ALLOWED_NETWORKS='[\"{network}\"]') or set "
        f"{section}.allow_private_networks=true",
        source=url,
    )


def resolve_and_check(target: _Target, settings: FetchSettings, deadline: float) -> list[IPAddress]:
    """Resolve the host and check every address; return them in resolver order (deduplicated)."""
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        addresses = _resolve(target, min(settings.connect_timeout_s, _remaining(deadline)))
    for addr in addresses:
        check_address(addr, settings, host=target.host, url=target.url)
    return addresses


def _resolve(target: _Target, timeout: float) -> list[IPAddress]:
    """``getaddrinfo`` in a daemon thread, so a hung resolver cannot outlive the deadline."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="image-fetch-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ImageFetchTimeoutError(
            f"resolving host {target.host!r} of {target.url!r} took longer than {timeout:.1f}s "
            "(fetch.connect_timeout_s)",
            source=target.url,
        )
    error = outcome.get("error")
    if isinstance(error, UnicodeError):
        raise UnsafeURLError(f"invalid host name {target.host!r} in {target.url!r}", source=target.url)
    if error is not None or not outcome.get("infos"):
        raise ImageFetchError(
            f"cannot resolve host {target.host!r} of {target.url!r}: {error}", source=target.url
        )
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in outcome["infos"]:  # type: ignore[union-attr]
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if addr not in addresses:
            addresses.append(addr)
    return addresses


def _remaining(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


class _Watchdog:
    """Shuts the connection's socket down at the deadline, interrupting any blocked read."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self.conn: HTTPConnection | None = None
        self._timer = threading.Timer(_remaining(deadline), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _timeout_error(target: _Target, settings: FetchSettings) -> ImageFetchTimeoutError:
    return ImageFetchTimeoutError(
        f"downloading {target.url!r} took longer than fetch.total_timeout_s={settings.total_timeout_s}s "
        "(the server is too slow); try again later or raise fetch.total_timeout_s",
        source=target.url,
    )


def _network_error(
    exc: BaseException, target: _Target, settings: FetchSettings, dog: _Watchdog
) -> ImageFetchError:
    if dog.fired:
        return _timeout_error(target, settings)
    if isinstance(exc, u3e.ConnectTimeoutError) and not isinstance(exc, u3e.NewConnectionError):
        return ImageFetchTimeoutError(
            f"connecting to {target.host}:{target.port} for {target.url!r} timed out "
            f"(fetch.connect_timeout_s={settings.connect_timeout_s}s)",
            source=target.url,
        )
    if isinstance(exc, TimeoutError | u3e.ReadTimeoutError):
        return ImageFetchTimeoutError(
            f"the server sent nothing for fetch.read_timeout_s={settings.read_timeout_s}s while downloading "
            f"{target.url!r}",
            source=target.url,
        )
    if isinstance(exc, ssl.SSLError | u3e.SSLError | HostnameMismatchError):
        return ImageFetchError(f"TLS error with {target.host} for {target.url!r}: {exc}", source=target.url)
    reason = getattr(exc, "reason", None) or exc
    if isinstance(exc, u3e.NewConnectionError):
        reason = str(exc).split(": ", 1)[-1]
    return ImageFetchError(f"could not download {target.url!r}: {reason}", source=target.url)


def _connect(
    target: _Target, addresses: list[IPAddress], settings: FetchSettings, deadline: float, dog: _Watchdog
) -> HTTPConnection:
    """Connect to the first reachable validated address (the address is pinned, not re-resolved)."""
    last: BaseException | None = None
    for addr in addresses[:_MAX_ADDRESSES_TRIED]:
        timeout = min(settings.connect_timeout_s, _remaining(deadline))
        conn: HTTPConnection
        if target.scheme == "https":
            conn = HTTPSConnection(
                str(addr),
                target.port,
                timeout=timeout,
                server_hostname=target.host,
                assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED",
            )
        else:
            conn = HTTPConnection(str(addr), target.port, timeout=timeout)
        dog.conn = conn
        try:
            conn.connect()
            return conn
        except (u3e.NewConnectionError, u3e.ConnectTimeoutError) as exc:
            conn.close()
            last = exc
            if dog.fired:
                break
        except (OSError, u3e.HTTPError, HostnameMismatchError) as exc:  # TLS errors: no retry
            conn.close()
            raise _network_error(exc, target, settings, dog) from exc
    assert last is not None
    raise _network_error(last, target, settings, dog) from last


def _status_error(status: int, reason: str, target: _Target) -> ImageFetchError:
    hint = {
        404: "not found: check the URL",
        410: "gone: the image was removed",
        401: "authentication required",
        403: "access denied",
        429: "rate limited: retry later",
    }.get(status)
    if hint is None:
        hint = "server error: retrying later may help" if status >= 500 else "the server refused the request"
    return ImageFetchError(
        f"HTTP {status} {reason} from {target.url!r} ({hint})".replace("  ", " "),
        source=target.url,
        status=status,
    )


def _read_body(
    response: BaseHTTPResponse, target: _Target, settings: FetchSettings, deadline: float, dog: _Watchdog
) -> bytes:
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > settings.max_bytes:
        raise ImageTooLargeError(
            f"{target.url!r} is {int(length):,} bytes (Content-Length), above the limit of "
            f"{settings.max_bytes:,} bytes (fetch.max_bytes)",
            source=target.url,
        )
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > settings.max_bytes:
            raise ImageTooLargeError(
                f"{target.url!r} sent more than {settings.max_bytes:,} bytes, the limit (fetch.max_bytes)",
                source=target.url,
            )
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise _timeout_error(target, settings)
    if dog.fired:  # a shut-down socket may look like a normal end of the body
        raise _timeout_error(target, settings)
    return b"".join(chunks)


def _fetch_once(
    target: _Target, addresses: list[IPAddress], settings: FetchSettings, deadline: float
) -> tuple[int, str | None, FetchedBytes | None]:
    """One request. Returns (status, redirect location, body) — body only for 2xx."""
    dog = _Watchdog(deadline)
    conn: HTTPConnection | None = None
    response: BaseHTTPResponse | None = None
    try:
        conn = _connect(target, addresses, settings, deadline, dog)
        try:
            read_timeout = min(settings.read_timeout_s, _remaining(deadline))
            conn.timeout = read_timeout
            if conn.sock is not None:
                conn.sock.settimeout(read_timeout)
            conn.request(
                "GET",
                target.request_target,
                headers={
                    "Host": target.host_header,
                    "User-Agent": settings.user_agent,
                    "Accept": "image/*,*/*;q=0.5",
                    "Accept-Encoding": "identity",
                },
                preload_content=False,
                decode_content=True,
                enforce_content_length=True,
            )
            response = conn.getresponse()
            status = response.status
            if status in _REDIRECTS:
                return status, response.headers.get("Location"), None
            if not 200 <= status < 300:
                raise _status_error(status, response.reason or "", target)
            data = _read_body(response, target, settings, deadline, dog)
            fetched = FetchedBytes(data, target.url, response.headers.get("Content-Type"))
            return status, None, fetched
        except (OSError, u3e.HTTPError, http.client.HTTPException) as exc:
            raise _network_error(exc, target, settings, dog) from exc
    finally:
        dog.cancel()
        if response is not None:
            response.close()
        if conn is not None:
            conn.close()


def fetch_url(url: str, settings: FetchSettings) -> FetchedBytes:
    """Download ``url`` following up to ``settings.max_redirects`` redirects, every hop SSRF-checked."""
    deadline = time.monotonic() + settings.total_timeout_s
    current = url
    seen = {url}
    redirects = 0
    previous: str | None = None
    while True:
        try:
            target = parse_http_url(current)
            check_port(target, settings)
            addresses = resolve_and_check(target, settings, deadline)
        except UnsafeURLError as exc:
            if previous is None:
                raise
            raise UnsafeURLError(f"redirect from {previous!r} refused: {exc}", source=url) from exc
        status, location, fetched = _fetch_once(target, addresses, settings, deadline)
        if fetched is not None:
            return fetched
        if not location:
            raise ImageFetchError(
                f"HTTP {status} redirect from {current!r} without a Location header",
                source=url,
                status=status,
            )
        following = urljoin(current, location.strip())
        if following in seen:
            raise ImageFetchError(
                f"redirect loop: {current!r} redirects back to {following!r} (started at {url!r})",
                source=url,
                status=status,
            )
        redirects += 1
        if redirects > settings.max_redirects:
            raise ImageFetchError(
                f"too many redirects starting at {url!r} (more than fetch.max_redirects="
                f"{settings.max_redirects}); last: {current!r} -> {following!r}",
                source=url,
                status=status,
            )
        seen.add(following)
        previous, current = current, following
