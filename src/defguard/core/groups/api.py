"""REST endpoints of the groups feature."""

from fastapi import APIRouter

router = APIRouter()
