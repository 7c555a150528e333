"""REST endpoints of the auth feature."""

from fastapi import APIRouter

router = APIRouter()
