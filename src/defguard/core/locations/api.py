"""REST endpoints of the locations feature."""

from fastapi import APIRouter

router = APIRouter()
