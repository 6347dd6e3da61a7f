"""Who is asking: the real client address behind trusted proxies, for rate limits, login throttling
and the audit log.

Why a trusted-proxy list: X-Forwarded-For is written by whoever sends the request. Believing its
first entry lets any script pick a fresh address per request and walk around every limit. Only the
entries appended by proxies we run can be believed, so the header is read from the right, past the
addresses in ``web.trusted_proxies``, and the first address that is not one of ours is the client.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def parse_proxies(spec: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` -> networks; ValueError names a bad entry."""
    nets = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"web.trusted_proxies: {part!r} is not an IP address or CIDR network") from None
    return tuple(nets)


def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, nets: tuple[Network, ...]) -> bool:
    return addr is not None and any(addr in n for n in nets)


def real_client(peer: str | None, forwarded_for: str, trusted_proxies: str) -> str:
    """The client address: the socket peer, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For entry that is not a trusted proxy. Junk in the header never becomes the key."""
    nets = parse_proxies(trusted_proxies)
    peer_addr = _addr(peer or "")
    client = str(peer_addr) if peer_addr is not None else (peer or "?")
    if not forwarded_for or not _trusted(peer_addr, nets):
        return client
    for hop in reversed(forwarded_for.split(",")[:64]):
        addr = _addr(hop)
        if addr is None:  # a hop we cannot read: the last trusted hop is the best we know
            return client
        client = str(addr)
        if not _trusted(addr, nets):
            return client
    return client
