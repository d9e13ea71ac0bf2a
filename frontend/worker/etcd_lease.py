"""A worker instance registered in etcd (``--discovery-backend etcd``): its key under a lease kept alive.

Imported by ``WorkerRuntime`` only with an etcd backend, so the embedded path never loads the etcd client.
The key and value are ``frontend/transport/etcd_keys.py``'s (the same ``Instance`` the embedded registry
publishes). Lifecycle: ``register`` grants a lease of ``ttl_s`` and writes the key on it; ``keep_alive`` renews
the lease every third of its TTL and, when etcd answers that the lease is gone (it was unreachable longer than
the TTL), grants a new one and writes the key again; ``drain`` rewrites the key with ``draining`` set;
``close`` deletes the key and revokes the lease. A model-card conflict is judged by the frontends (they log
and skip a refused instance): etcd itself accepts any key.
"""

from __future__ import annotations

import asyncio
import logging
import math

import msgspec

from ..config.etcd_settings import EtcdSettings
from ..protocol.registry import Instance
from ..transport.etcd_client import CALL_TIMEOUT_S, ETCD_ERRORS, authenticate, open_client, refresh_lease
from ..transport.etcd_keys import encode_instance, instance_key

log = logging.getLogger(__name__)


class EtcdLease:
    """One instance's key and lease in etcd."""

    def __init__(self, settings: EtcdSettings, namespace: str, ttl_s: float) -> None:
        self.settings = settings
        self.namespace = namespace
        self.ttl_s = max(1, math.ceil(ttl_s))  # etcd leases are whole seconds
        self.lease_id = 0
        self._instance: Instance | None = None
        self._client = None
        self._healthy = True

    async def register(self, instance: Instance) -> None:
        """Write ``instance`` under a new lease; raises one of ``ETCD_ERRORS`` when etcd cannot be reached."""
        key = instance_key(self.namespace, instance.instance_id)
        if self._client is None:
            self._client = await open_client(self.settings)
        client = self._client
        await authenticate(client, self.settings)
        lease = await client.lease.grant(ttl=self.ttl_s, timeout=CALL_TIMEOUT_S)
        await client.kv.put(key, encode_instance(instance), lease=lease.ID, timeout=CALL_TIMEOUT_S)
        self.lease_id, self._instance = lease.ID, instance
        log.info("registered in etcd", extra={"key": key, "lease": f"{lease.ID:x}", "ttl_s": lease.TTL})

    async def keep_alive(self) -> None:
        """Renew the lease every third of its TTL until cancelled; register again when it was lost."""
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            await self.renew()

    async def renew(self) -> None:
        """One renewal (a new lease and key when the old lease is gone); etcd unreachable is logged once."""
        assert self._client is not None and self._instance is not None
        try:
            if not await refresh_lease(self._client, self.lease_id):
                log.warning("etcd lease lost; registering again", extra={"lease": f"{self.lease_id:x}"})
                await self.register(self._instance)
        except ETCD_ERRORS as exc:
            if self._healthy:
                log.warning("etcd unreachable; the lease is renewed when it returns", extra={"error": str(exc)})
            self._healthy = False
            return
        if not self._healthy:
            log.warning("etcd reachable again", extra={"lease": f"{self.lease_id:x}"})
        self._healthy = True

    async def drain(self) -> None:
        """Rewrite the key with ``draining`` set: frontends route the instance nothing new."""
        if self._client is None or self._instance is None:
            return
        self._instance = msgspec.structs.replace(self._instance, draining=True)
        await self._client.kv.put(instance_key(self.namespace, self._instance.instance_id),
                                  encode_instance(self._instance), lease=self.lease_id, timeout=CALL_TIMEOUT_S)

    async def close(self) -> None:
        """Delete the key and revoke the lease (best effort: an unreachable etcd expires the lease itself)."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self._instance is not None:
                await client.kv.delete(instance_key(self.namespace, self._instance.instance_id), timeout=1.0)
                await client.lease.revoke(self.lease_id, timeout=1.0)
        except ETCD_ERRORS as exc:
            log.warning("etcd unregister failed; the lease expires by itself", extra={"error": str(exc)})
        finally:
            await client.close()
