"""REST endpoints of the gateways feature."""

from fastapi import APIRouter

router = APIRouter()
