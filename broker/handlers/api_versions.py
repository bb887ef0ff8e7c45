"""ApiVersions (18): the advertised table. Unsupported versions are answered by the server's
error-35 fallback (client.wire.protocol.encode_api_versions_fallback) before reaching here."""

from __future__ import annotations

from typing import Any

from broker.server import ApiSpec, Handler


def handler(apis: dict[int, ApiSpec]) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        keys = [{"api_key": key, "min_version": spec.min_version, "max_version": spec.max_version}
                for key, spec in sorted(apis.items())]
        return {"error_code": 0, "api_keys": keys, "throttle_time_ms": 0}
    return handle
