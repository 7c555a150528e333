"""`POST /ui/qr`: a QR code for text the browser holds but the server must not keep.

A config with a private key made in the browser, or an enrollment link with its
token, exists only in the page; the page posts it here once and shows the SVG.
Nothing is stored or logged. Admin session and CSRF token required, like any
state-changing call.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from defguard.core.webui.pages import Admin
from defguard.web.qr import qr_svg

router = APIRouter()


class QrRequest(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


@router.post("/ui/qr")
async def qr_code(body: QrRequest, _: Admin) -> Response:
    return Response(str(qr_svg(body.text)), media_type="image/svg+xml")
