"""Console pages: the dashboard, one panel per location.

Reads the same stats as `GET /network/{id}/stats` (what the gateways reported)
and the same gateway link state as `GET /network/{id}/gateways`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from defguard.core.context import DbSession
from defguard.core.gateways import stats
from defguard.core.gateways.schemas import GatewayInfo
from defguard.core.gateways.service import gateway_infos
from defguard.core.locations.schemas import LocationInfo
from defguard.core.locations.service import list_location_infos
from defguard.core.webui.charts import TrafficChart, traffic_chart
from defguard.core.webui.pages import Admin, render
from defguard.db.base import utcnow

router = APIRouter()

# The stats API's default window, bucketed by minute.
WINDOW = timedelta(hours=1)
STEP = timedelta(minutes=1)


@dataclass
class LocationPanel:
    location: LocationInfo
    gateways: list[GatewayInfo]
    connected_users: int
    connected_devices: int
    active_devices: int
    chart: TrafficChart

    @property
    def gateways_up(self) -> int:
        return sum(1 for g in self.gateways if g.connected)


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, admin: Admin, db: DbSession) -> HTMLResponse:
    now = utcnow()
    # Whole minutes, so the buckets the stats return line up with the chart's.
    since = (now - WINDOW).replace(second=0, microsecond=0)
    locations = await list_location_infos(db)
    by_location: dict[int, list[GatewayInfo]] = defaultdict(list)
    for gateway in await gateway_infos(db, [loc.id for loc in locations]):
        by_location[gateway.location_id].append(gateway)
    panels = []
    for location in locations:
        numbers = await stats.location_stats(db, since=since, location_id=location.id)
        panels.append(
            LocationPanel(
                location=location,
                gateways=by_location[location.id],
                connected_users=numbers["current_active_users"],
                connected_devices=numbers["current_active_user_devices"]
                + numbers["current_active_network_devices"],
                active_devices=numbers["active_user_devices"] + numbers["active_network_devices"],
                chart=traffic_chart(
                    numbers["transfer_series"],
                    start=since,
                    end=now,
                    step=STEP,
                    label=f"Traffic of {location.name} in the last hour",
                ),
            )
        )
    return render(
        request,
        "dashboard.html",
        admin,
        section="dashboard",
        panels=panels,
        total_connected=sum(p.connected_devices for p in panels),
        total_gateways=sum(len(p.gateways) for p in panels),
        total_gateways_up=sum(p.gateways_up for p in panels),
        total_upload=sum(p.chart.upload for p in panels),
        total_download=sum(p.chart.download for p in panels),
    )
