"""REST endpoints of the users feature."""

from fastapi import APIRouter

router = APIRouter()
