"""`/proxy` (spec §7, "Proxy"): Edges registered, listed with their link state, changed and removed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from defguard import __version__
from defguard.core.activity.models import ActivityLogEvent
from defguard.core.gateways.service import LINK_STALE_AFTER
from defguard.core.proxies.addresses import parse_grpc_url
from defguard.core.proxies.models import Proxy, ProxyLink
from defguard.core.proxies.service import ensure_proxies
from defguard.db.base import utcnow
from tests.integration.test_edge_link import core_links, running_edge, wait_until

NEW = {"name": "edge-1", "address": "edge1.example.com", "port": 50051}
FIELDS = {
    "id", "name", "address", "port", "connected_at", "disconnected_at", "version", "enabled",
    "certificate_serial", "certificate_expiry", "modified_at", "modified_by",
}  # fmt: skip


async def test_anonymous_and_non_admin_are_rejected(client, user_client):
    for method, path in [
        ("get", "/proxy"),
        ("post", "/proxy"),
        ("get", "/proxy/1"),
        ("put", "/proxy/1"),
        ("delete", "/proxy/1"),
    ]:
        body = {"name": "x", "enabled": True} if method == "put" else NEW
        kwargs = {"json": body} if method in ("put", "post") else {}
        r = await client.request(method, path, **kwargs)
        assert r.status_code == 401, (method, path)
        r = await user_client.request(method, path, **kwargs)
        assert r.status_code == 403, (method, path)
        assert r.json() == {"msg": "access denied"}


async def test_create_list_get_update_delete(admin_client, db):
    r = await admin_client.post("/proxy", json={**NEW, "address": "https://Edge1.Example.com"})
    assert r.status_code == 201, r.text
    proxy = r.json()
    assert set(proxy) == FIELDS | {"core_client_cert_expiry"}
    assert (proxy["name"], proxy["address"], proxy["port"]) == (
        "edge-1",
        "edge1.example.com",
        50051,
    )
    assert proxy["enabled"] is True and proxy["modified_by"] == "Defguard Administrator"
    assert proxy["connected_at"] is None and proxy["version"] is None

    r = await admin_client.post(
        "/proxy", json={"name": "edge-2", "address": "[fd00::1]", "port": 7}
    )
    assert r.status_code == 201, r.text
    assert r.json()["address"] == "fd00::1"

    listed = (await admin_client.get("/proxy")).json()
    assert [p["name"] for p in listed] == ["edge-1", "edge-2"]
    assert set(listed[0]) == FIELDS | {"connected"}
    assert all(p["connected"] is False for p in listed)

    r = await admin_client.get(f"/proxy/{proxy['id']}")
    assert r.status_code == 200 and r.json() == proxy
    r = await admin_client.get("/proxy/999")
    assert r.status_code == 404 and r.json() is None

    r = await admin_client.put(f"/proxy/{proxy['id']}", json={"name": " dmz ", "enabled": False})
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["name"], changed["enabled"]) == ("dmz", False)
    assert changed["modified_at"] >= proxy["modified_at"]
    assert changed["modified_by"] == "Defguard Administrator"
    assert (await admin_client.get(f"/proxy/{proxy['id']}")).json() == changed

    r = await admin_client.put("/proxy/999", json={"name": "x", "enabled": True})
    assert r.status_code == 404 and r.json() is None

    r = await admin_client.delete(f"/proxy/{proxy['id']}")
    assert r.status_code == 200 and r.json() == {}
    r = await admin_client.delete(f"/proxy/{proxy['id']}")
    assert r.status_code == 404 and r.json() is None
    assert [p["name"] for p in (await admin_client.get("/proxy")).json()] == ["edge-2"]

    async with db.session() as s:
        events = (
            await s.execute(
                select(ActivityLogEvent.event, ActivityLogEvent.description)
                .where(ActivityLogEvent.event.like("proxy%"))
                .order_by(ActivityLogEvent.id)
            )
        ).all()
    assert [tuple(e) for e in events] == [
        ("proxy_modified", "Modified Edge dmz"),
        ("proxy_deleted", "Deleted Edge dmz"),
    ]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"address": "edge.example.com:50051"}, "address"),
        ({"address": "edge.example.com/grpc"}, "address"),
        ({"address": "ftp://edge.example.com"}, "address"),
        ({"address": "https://"}, "address"),
        ({"address": "bad host"}, "address"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"name": "   "}, "name"),
    ],
)
async def test_create_validation(admin_client, db, body, fragment):
    r = await admin_client.post("/proxy", json={**NEW, **body})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["msg"]
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Proxy))).scalar_one() == 0


async def test_duplicate_address_and_port_is_409(admin_client):
    assert (await admin_client.post("/proxy", json=NEW)).status_code == 201
    r = await admin_client.post(
        "/proxy", json={**NEW, "name": "again", "address": "EDGE1.example.com"}
    )
    assert r.status_code == 409
    assert "edge1.example.com" in r.json()["msg"]
    r = await admin_client.post("/proxy", json={**NEW, "port": 50052})
    assert r.status_code == 201


async def test_put_needs_name_and_enabled_and_a_user_agent(admin_client):
    proxy = (await admin_client.post("/proxy", json=NEW)).json()
    path = f"/proxy/{proxy['id']}"
    assert (await admin_client.put(path, json={"name": "x"})).status_code == 422
    assert (await admin_client.put(path, json={"name": " ", "enabled": True})).status_code == 400
    r = await admin_client.put(
        path, json={"name": "x", "enabled": True}, headers={"User-Agent": ""}
    )
    assert r.status_code == 400 and r.json() == {"msg": "Missing UserAgent header"}
    assert (await admin_client.get(path)).json()["name"] == "edge-1"


async def test_link_state_across_cores(admin_client, db):
    """Connected while any live Core holds an open link; a silent Core's link counts as gone."""
    proxy = (await admin_client.post("/proxy", json=NEW)).json()
    now = utcnow().replace(microsecond=0)
    m = timedelta(minutes=1)
    async with db.transaction() as s:
        s.add_all(
            [
                ProxyLink(
                    proxy_id=proxy["id"],
                    core_id="live",
                    connected_at=now - 10 * m,
                    disconnected_at=None,
                    last_seen=now,
                    version="2.0.1",
                ),
                ProxyLink(
                    proxy_id=proxy["id"],
                    core_id="earlier",
                    connected_at=now - 30 * m,
                    disconnected_at=now - 20 * m,
                    last_seen=now - 20 * m,
                    version="2.0.0",
                ),
            ]
        )
    [info] = (await admin_client.get("/proxy")).json()
    assert info["connected"] is True
    assert info["connected_at"] == (now - 10 * m).isoformat()
    assert info["disconnected_at"] == (now - 20 * m).isoformat()
    assert info["version"] == "2.0.1"
    detail = (await admin_client.get(f"/proxy/{proxy['id']}")).json()
    assert {k: detail[k] for k in ("connected_at", "disconnected_at", "version")} == {
        k: info[k] for k in ("connected_at", "disconnected_at", "version")
    }

    stale = now - LINK_STALE_AFTER - m
    async with db.transaction() as s:
        link = await s.get(ProxyLink, (proxy["id"], "live"))
        assert link is not None
        link.last_seen = stale
    [info] = (await admin_client.get("/proxy")).json()
    assert info["connected"] is False
    assert info["connected_at"] == (now - 10 * m).isoformat()
    assert info["disconnected_at"] == stale.isoformat()


async def test_registered_edge_is_connected_by_the_core_and_disabling_drops_it(admin_client, db):
    async with running_edge() as edge:
        r = await admin_client.post(
            "/proxy", json={"name": "local", "address": "127.0.0.1", "port": edge.grpc_port}
        )
        assert r.status_code == 201, r.text
        proxy_id = r.json()["id"]
        async with core_links(db):

            async def connected() -> bool:
                [info] = (await admin_client.get("/proxy")).json()
                return info["connected"]

            await wait_until(connected)
            [info] = (await admin_client.get("/proxy")).json()
            assert info["version"] == __version__ and info["disconnected_at"] is None

            r = await admin_client.put(
                f"/proxy/{proxy_id}", json={"name": "local", "enabled": False}
            )
            assert r.status_code == 200

            async def dropped() -> bool:
                [info] = (await admin_client.get("/proxy")).json()
                return not info["connected"] and info["disconnected_at"] is not None

            await wait_until(dropped)


# -- DEFGUARD_PROXY_URL ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://edge:50051", ("edge", 50051)),
        ("https://Edge.Example.com:50052/", ("edge.example.com", 50052)),
        ("edge:50053", ("edge", 50053)),
        ("edge", ("edge", 50051)),
        ("http://edge", ("edge", 50051)),
        ("[::1]:50054", ("::1", 50054)),
        ("http://[fd00::5]", ("fd00::5", 50051)),
        ("::1", ("::1", 50051)),
        ("10.0.0.5:7000", ("10.0.0.5", 7000)),
        ("  defguard_edge:50051 ", ("defguard_edge", 50051)),
    ],
)
def test_grpc_url_parsing(url, expected):
    assert parse_grpc_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("grpc://edge:50051", "scheme"),
        ("http://edge:50051/path", "path"),
        ("http://edge:50051?x=1", "path"),
        ("http://user@edge:50051", "user"),
        ("edge:0", "between 1 and 65535"),
        ("edge:99999", "edge:99999"),
        ("edge:port", "edge:port"),
        ("http://", "host"),
        ("bad host:50051", "bad host"),
    ],
)
def test_invalid_grpc_url_is_a_clear_error(url, fragment):
    with pytest.raises(ValueError, match=r"Edge URL|empty") as caught:
        parse_grpc_url(url)
    assert fragment in str(caught.value)


async def test_ensure_proxies_is_idempotent_and_keeps_admin_changes(db, admin_client):
    urls = ["http://edge-a:50051", "https://edge-b.example.com:50052", "[::1]:50053"]
    async with db.transaction() as s:
        first = await ensure_proxies(s, urls, "defguard")
    assert [(p.name, p.address, p.port) for p in first] == [
        ("edge-a:50051", "edge-a", 50051),
        ("edge-b.example.com:50052", "edge-b.example.com", 50052),
        ("[::1]:50053", "::1", 50053),
    ]
    assert all(p.enabled and p.modified_by == "defguard" for p in first)

    r = await admin_client.put(f"/proxy/{first[0].id}", json={"name": "renamed", "enabled": False})
    assert r.status_code == 200

    # Another start (or another Core), with the same Edges written differently and one twice.
    async with db.transaction() as s:
        again = await ensure_proxies(
            s, ["edge-a:50051", "edge-a", "HTTPS://EDGE-B.example.com:50052", "[::1]:50053"], "x"
        )
    assert [p.id for p in again] == [p.id for p in first]
    async with db.session() as s:
        rows = (await s.execute(select(Proxy).order_by(Proxy.id))).scalars().all()
    assert len(rows) == 3
    assert (rows[0].name, rows[0].enabled) == ("renamed", False)


async def test_ensure_proxies_with_a_bad_url_writes_nothing(db):
    async with db.transaction() as s:
        with pytest.raises(ValueError, match="ftp://edge"):
            await ensure_proxies(s, ["http://good:50051", "ftp://edge"], "defguard")
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Proxy))).scalar_one() == 0
