"""User tokens: what a person's browser or app carries instead of an API key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from avrec.service.deps import require
from avrec.service.schemas import TokenRequest, TokenResponse

router = APIRouter(prefix="/v1", tags=["tokens"])


@router.post("/tokens", response_model=TokenResponse, status_code=201,
             summary="A short-lived token for one user")  # fmt: skip
def mint_token(
    body: TokenRequest,
    request: Request,
    _: object = Depends(require("tokens")),
) -> TokenResponse:
    """Needs a key with the ``tokens`` (or ``admin``) scope: the platform's login server
    mints a token when a person signs in and hands it to their browser or app. With it,
    the bearer may read that user's recommendations, search, ask and post that user's
    events, until it expires; nothing else."""
    tokens = request.app.state.tokens
    token, expires_at = tokens.mint(body.user_id, body.ttl_s)
    return TokenResponse(
        token=token, user_id=body.user_id, expires_at=expires_at, token_type="bearer"
    )
