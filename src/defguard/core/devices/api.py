"""REST endpoints of the devices feature."""

from fastapi import APIRouter

router = APIRouter()
