"""Request-scoped helpers shared by the routers: the app state and who is calling."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from fastapi import Depends, Request

from gateway.errors import AuthenticationFailed
from gateway.proxy.keys import KEY_PREFIX, KeyInfo
from gateway.web.state import AppState


def state(request: Request) -> AppState:
    return request.app.state.tg  # type: ignore[no-any-return]


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("api-key") or None


def is_admin(st: AppState, token: str | None) -> bool:
    admin = st.settings.admin_key
    return bool(admin and token and hmac.compare_digest(token.encode(), admin.encode()))


async def client_key(request: Request) -> KeyInfo | None:
    """The caller's virtual key, if any. With an admin key configured, a valid key is required."""
    st = state(request)
    token = bearer(request)
    secured = st.settings.admin_key is not None
    if is_admin(st, token):
        return None
    if token and token.startswith(KEY_PREFIX):
        hit, info = st.keys.get(token)
        if not hit:
            info = await asyncio.to_thread(st.keys.load, token)
        if info is None:
            raise AuthenticationFailed(
                "The API key is not valid or was revoked; create one with POST /api/keys."
            )
        return info
    if secured:
        raise AuthenticationFailed(
            "A tiergate virtual key is required: pass it as the API key (Authorization: Bearer tg-...)."
            if token is None
            else "The API key is not a tiergate key; create one with POST /api/keys and use it as the API key."
        )
    return None  # open mode: loopback only, any or no token accepted


async def require_admin(request: Request) -> None:
    st = state(request)
    if st.settings.admin_key is None:
        return  # open mode: loopback only
    if not is_admin(st, bearer(request)):
        raise AuthenticationFailed(
            "This endpoint needs the admin key: Authorization: Bearer $TIERGATE_ADMIN_KEY."
        )


State = Annotated[AppState, Depends(state)]
Admin = Depends(require_admin)
