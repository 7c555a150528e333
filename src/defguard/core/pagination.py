"""The `{data, pagination}` envelope of paginated list endpoints."""

from __future__ import annotations

import math
from typing import Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T")


class PaginationMeta(BaseModel):
    current_page: int
    page_size: int
    total_items: int
    total_pages: int
    next_page: int | None


class Paginated(BaseModel, Generic[T]):
    data: list[T]
    pagination: PaginationMeta


class PageParams:
    """`page` below 1 becomes 1; `per_page` is clamped to 1..100 (default 50)."""

    def __init__(
        self,
        page: int = Query(1, description="1-based page number"),
        per_page: int = Query(50, description="items per page, 1 to 100"),
    ) -> None:
        self.page = max(page, 1)
        self.per_page = min(max(per_page, 1), 100)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def meta(self, total_items: int) -> PaginationMeta:
        total_pages = math.ceil(total_items / self.per_page)
        return PaginationMeta(
            current_page=self.page,
            page_size=self.per_page,
            total_items=total_items,
            total_pages=total_pages,
            next_page=self.page + 1 if self.page < total_pages else None,
        )
