"""The Docker networks of shiplift's environments: one per app and environment, a small subnet each.

Docker gives a network without a subnet a whole /16 or /20 of its default pools
(172.17.0.0/16-172.31.0.0/16, 192.168.0.0/16): about thirty networks exhaust them, and the next
release fails with ``could not find an available, non-overlapping IPv4 address pool``. So
shiplift names each network's subnet itself: the first free ``/<docker.subnet_size>`` (default
/27: 29 addresses, for the router and the versions of a rollout) of ``docker.address_pool``
(default ``10.210.0.0/16``: 2048 networks). Free means that no network of the engine, shiplift's
or any other, has a subnet overlapping it (read from every network's IPAM config, one API call).

Two releases may pick the same subnet at the same moment; Docker refuses the second ("Pool
overlaps…"), which then reads the networks again and takes another, a random free one so that
many at once spread out. Two creations of the same network: the second finds the first's.
When the pool is full: one line naming the settings to change (:class:`ConfigError`, exit 2).
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.types import IPAMConfig, IPAMPool

from shiplift.config import DockerConfig
from shiplift.errors import ConfigError, TargetError

ATTEMPTS = 20
"""Tries to create a network when other creations keep taking the subnet picked."""


def subnets_in_use(networks: list[Any]) -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets of ``networks`` (every network of an engine, as ``networks.list()`` gives)."""
    found = []
    for network in networks:
        for pool in (network.attrs.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, TypeError):
                subnet = ipaddress.ip_network(pool.get("Subnet") or "", strict=False)
                if isinstance(subnet, ipaddress.IPv4Network):
                    found.append(subnet)
    return found


def free_subnets(
    pool: ipaddress.IPv4Network, size: int, taken: list[ipaddress.IPv4Network]
) -> list[ipaddress.IPv4Network]:
    """The ``/size`` subnets of ``pool``, in order, that overlap none of ``taken``."""
    step = 1 << (32 - size)
    base = int(pool.network_address)
    count = pool.num_addresses // step
    blocked: set[int] = set()
    for net in taken:
        lo = max(int(net.network_address), base)
        hi = min(int(net.broadcast_address), int(pool.broadcast_address))
        if lo <= hi:
            blocked.update(range((lo - base) // step, (hi - base) // step + 1))
    return [ipaddress.IPv4Network((base + i * step, size)) for i in range(count) if i not in blocked]


def ensure_network(
    client: docker.DockerClient, name: str, labels: dict[str, str], config: DockerConfig
) -> None:
    """Create the bridge network ``name`` on a free subnet of the pool, unless it exists."""
    # the everyday case first, one small answer however many networks the engine has
    if any(n.name == name for n in client.networks.list(names=[name])):
        return
    pool = ipaddress.IPv4Network(config.address_pool)
    for attempt in range(ATTEMPTS):
        networks = client.networks.list()
        if any(n.name == name for n in networks):
            return
        free = free_subnets(pool, config.subnet_size, subnets_in_use(networks))
        if not free:
            raise ConfigError(
                f"docker.address_pool: no free /{config.subnet_size} subnet left in {pool} for the "
                f"network {name} ({len(networks)} networks on the engine); widen docker.address_pool, "
                "raise docker.subnet_size, or tear down environments no longer used (shiplift teardown)"
            )
        # the first free one; after a collision with another creation, any free one
        subnet = free[0] if attempt == 0 else random.choice(free)
        try:
            client.networks.create(
                name,
                driver="bridge",
                labels=labels,
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet))]),
                check_duplicate=True,
            )
            return
        except APIError as exc:
            text = _explain(exc).lower()
            if "already exists" in text:
                return  # the same network, created by another release at the same moment
            if "overlap" not in text:
                raise TargetError(f"cannot create the network {name} on {subnet}: {_explain(exc)}") from None
    raise TargetError(
        f"cannot create the network {name}: another network took the subnet picked, {ATTEMPTS} times"
    )


def remove_network(client: docker.DockerClient, name: str) -> bool:
    """Remove the network ``name`` (every one so named), disconnecting what is still attached;
    whether there was one."""
    found = [n for n in client.networks.list(names=[name]) if n.name == name]
    for network in found:
        with contextlib.suppress(NotFound):
            network.reload()
            for container in network.attrs.get("Containers") or {}:
                with contextlib.suppress(APIError):
                    network.disconnect(container, force=True)
            try:
                network.remove()
            except NotFound:
                pass
            except APIError as exc:
                raise TargetError(f"cannot remove the network {name}: {_explain(exc)}") from None
    return bool(found)


def _explain(exc: APIError) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())[:240]
