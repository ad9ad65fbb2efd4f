"""The address guard: a webhook reaches public addresses only, unless `WEBHOOK_ALLOWED_HOSTS`
allows its host, and the addresses checked are the ones connected to. A name is resolved once
per attempt, every address it resolves to is checked, and the connection goes to a checked
address with the name as its Host header and TLS server name: a second lookup (DNS rebinding,
a name that resolves to 127.0.0.1 by the time of delivery) never gets a say. A lookup takes
at most the time it is given: `getaddrinfo` has no timeout of its own, and a resolver that does
not answer holds it for its own retries (five seconds each, by glibc's default)."""

import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import urllib3

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = {"http": 80, "https": 443}
RESPONSE_KEPT = 4096  # bytes of a response body kept in the delivery log


class Refused(Exception):
    """The URL may not be a webhook's: its host is or resolves to an address the guard refuses,
    or it is not an http(s) URL SIT can post to."""


def forbidden(address: Address) -> str | None:
    """What keeps webhooks from an address (loopback, link-local, multicast, unspecified,
    private); None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "multicast"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "private"


def allows(allowed: tuple[str, ...], host: str, address: Address) -> bool:
    """Whether `WEBHOOK_ALLOWED_HOSTS` (parsed: names, networks, `loopback`, `private`) allows
    posting to `host` at `address`."""
    kind = forbidden(address)
    if kind is None or host in allowed or kind in allowed:
        return True
    return any(address in ipaddress.ip_network(entry) for entry in allowed if "/" in entry)


@dataclass(frozen=True)
class Target:
    """Where one attempt posts: the URL's parts and the checked addresses of its host."""

    parts: SplitResult
    addresses: list[Address]

    @property
    def host(self) -> str:
        return self.parts.hostname or ""

    @property
    def port(self) -> int:
        return self.parts.port or SCHEMES[self.parts.scheme]


def parse(url: str) -> SplitResult:
    """:raise Refused: not an absolute http(s) URL with a valid host name, or one with
    credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as error:
        raise Refused(f"is not a URL ({error})") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise Refused("must be an absolute http:// or https:// URL")
    try:
        parts.hostname.encode("idna")  # what resolving it does: labels of 1-63 characters
    except UnicodeError:
        raise Refused(f"has no valid host name ({parts.hostname[:70]}…)") from None
    if parts.username is not None or parts.password is not None:
        raise Refused("may not carry a user name or password; put a token in the path instead")
    return parts


def resolve(host: str, port: int, timeout: float) -> list[Address]:
    """The addresses of a host: itself when it is an IP literal, else what DNS says now.

    :raise OSError: the name does not resolve (`TimeoutError`: not within `timeout` seconds).
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    found = lookup(host, port, timeout)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))


def lookup(host: str, port: int, timeout: float) -> list[Any]:
    """`getaddrinfo` of the host, waited for no longer than `timeout` seconds: on a thread of
    its own (a daemon, which a resolver that never answers cannot keep from exiting), left to
    end by itself when the wait is over.

    :raise OSError: the name does not resolve (`TimeoutError`: not in time).
    """
    answer: list[Any] = []

    def ask() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as error:
            answer.append(error)

    thread = threading.Thread(target=ask, name=f"sit-dns-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        raise TimeoutError(f"{host} did not resolve within {timeout:g} s")
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer[0]


def check(url: str, allowed: tuple[str, ...], timeout: float) -> Target:
    """The URL's target, every address of its host checked; its name resolved within
    `timeout` seconds.

    :raise Refused: the URL, or one of its host's addresses, is refused.
    :raise OSError: the host's name does not resolve (in time).
    """
    parts = parse(url)
    port = parts.port or SCHEMES[parts.scheme]
    target = Target(parts, resolve(parts.hostname or "", port, timeout))
    for address in target.addresses:
        if not allows(allowed, target.host, address):
            shown = "" if str(address) == target.host else f" resolves to {address}, which"
            raise Refused(
                f"{target.host}{shown} is not a public address ({forbidden(address)}): webhooks"
                " go to public addresses only, unless WEBHOOK_ALLOWED_HOSTS allows it"
            )
    return target


def post(
    target: Target, headers: dict[str, str], body: bytes, timeout: float
) -> tuple[int, str, str | None]:
    """POST to the target's first checked address, never following a redirect; returns the
    status, the first `RESPONSE_KEPT` bytes of the body (as text) and the `Location` header.

    :raise urllib3.exceptions.HTTPError: it could not connect, timed out, or broke off.
    """
    address, options = str(target.addresses[0]), {"timeout": urllib3.Timeout(total=timeout)}
    if target.parts.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host,
            **options,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, **options)
    path = target.parts.path or "/"
    path += f"?{target.parts.query}" if target.parts.query else ""
    netloc = target.parts.netloc.rpartition("@")[2]
    with pool:
        response = pool.urlopen(
            "POST",
            path,
            body=body,
            headers={"Host": netloc, **headers},
            retries=False,
            redirect=False,
            preload_content=False,
        )
        try:
            kept = response.read(RESPONSE_KEPT).decode("utf-8", "replace")
        finally:
            response.release_conn()
    return response.status, kept, response.headers.get("Location")
