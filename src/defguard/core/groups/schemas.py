"""Request and response bodies of the groups API (field names are the REST contract)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GroupInfo(BaseModel):
    id: int
    name: str
    members: list[str] = Field(description="usernames, sorted")
    vpn_locations: list[str] = Field(description="names of locations this group may use")
    is_admin: bool


class EditGroupInfo(BaseModel):
    name: str
    members: list[str] = Field(description="usernames")
    is_admin: bool


class GroupMemberRequest(BaseModel):
    username: str


class GroupsAssignRequest(BaseModel):
    groups: list[str] = Field(description="group names")
    users: list[int] = Field(description="user ids")
