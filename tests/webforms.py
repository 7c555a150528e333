"""Console forms as a browser submits them, for the web UI tests.

`read_form` collects the controls of one form from a page and `body_of` turns them
into the JSON body that src/defguard/web/static/forms.js `collect()` sends, so a
test can post exactly what the page would and check that the API accepts it.
Also the JSON body of a location, and a helper creating one through the API.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import httpx

from tests.api_bodies import location_body as api_location_body

# Elements in `form.elements` that forms.js reads (fieldset, object and output
# have no name it could use here).
_CONTROL_TAGS = ("input", "select", "textarea", "button")


class FormReader(HTMLParser):
    """The named controls of one form (by id), with the attributes forms.js reads.

    Each control is a dict of its attributes plus "tag"; a select also has
    "options" (the attributes of each option, with "value" defaulting to its text),
    a textarea has its text as "value", and a control inside a disabled fieldset
    is marked "disabled". Controls outside the form tied to it by form="id" count.
    """

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.form: dict[str, str | None] = {}
        self.controls: list[dict[str, Any]] = []
        self._select: dict[str, Any] | None = None
        self._option: dict[str, Any] | None = None
        self._textarea: dict[str, Any] | None = None
        self._fieldsets: list[bool] = []  # disabled or not, innermost last

    def _owned(self, a: dict[str, str | None]) -> bool:
        owner = a.get("form")
        return owner == self.form_id if owner is not None else self.inside

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("id") == self.form_id:
            self.inside, self.form = True, a
            return
        if tag == "fieldset":
            self._fieldsets.append(self.inside and "disabled" in a)
            return
        if tag in ("option", "optgroup") or tag == "select":
            self._end_option()
        if tag == "option" and self._select is not None:
            self._option = {**a, "text": ""}
            self._select["options"].append(self._option)
            return
        if tag not in _CONTROL_TAGS or not a.get("name") or not self._owned(a):
            return
        control: dict[str, Any] = {"tag": tag, **a}
        if any(self._fieldsets):
            control.setdefault("disabled", "")
        self.controls.append(control)
        if tag == "select":
            self._select = control
            control["options"] = []
        elif tag == "textarea":
            self._textarea = control
            control["value"] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea["value"] += data
        elif self._option is not None:
            self._option["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "fieldset" and self._fieldsets:
            self._fieldsets.pop()
        elif tag in ("option", "optgroup"):
            self._end_option()
        elif tag == "select":
            self._end_option()
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            # The HTML parser drops one newline right after <textarea>.
            value = self._textarea["value"]
            self._textarea["value"] = value[1:] if value.startswith("\n") else value
            self._textarea = None

    def _end_option(self) -> None:
        if self._option is not None:
            text = " ".join(self._option.pop("text").split())
            self._option.setdefault("value", text)
            self._option = None

    def names(self) -> set[str]:
        return {c["name"] for c in self.controls}

    def control(self, name: str) -> dict[str, Any]:
        return next(c for c in self.controls if c["name"] == name)


def read_form(html: str, form_id: str) -> FormReader:
    reader = FormReader(form_id)
    reader.feed(html)
    reader.close()
    assert reader.form, f"no form #{form_id}"
    return reader


def _number(text: str) -> int | float:
    """JavaScript's Number() of a trimmed string."""
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return float("nan")


def _box_value(control: dict[str, Any]) -> str:
    """A checkbox's or radio's value: "on" without a value attribute."""
    return control["value"] or "" if "value" in control else "on"


def _typed_value(control: dict[str, Any], raw: Any) -> Any:
    """forms.js `fieldValue` for a control whose current value is `raw`."""
    dtype = control.get("data-type") or ""
    trimmed = raw.strip() if isinstance(raw, str) else raw
    if dtype == "int":
        if trimmed == "":
            return None
        return int(trimmed) if re.fullmatch(r"-?\d+", trimmed) else trimmed
    if dtype in ("list", "intlist"):
        items = [s.strip() for s in re.split(r"[\n,]", trimmed) if s.strip()]
        return [_number(s) for s in items] if dtype == "intlist" else items
    if dtype == "nullable":
        return trimmed or None
    if dtype == "datetime":
        return (trimmed + (":00" if len(trimmed) == 16 else "")) if trimmed else None
    if dtype == "json":
        return json.loads(trimmed) if trimmed else None
    return raw


def _select_value(control: dict[str, Any], typed: Any) -> Any:
    dtype = control.get("data-type") or ""
    options = control["options"]
    if "multiple" in control:
        values = [o["value"] for o in options if "selected" in o]
        return [_number(v.strip()) for v in values] if dtype == "intlist" else values
    if typed is not None:
        return _typed_value(control, typed)
    chosen = [o for o in options if "selected" in o]
    enabled = [o for o in options if "disabled" not in o]
    option = chosen[-1] if chosen else (enabled or [None])[0]
    return _typed_value(control, option["value"] if option else "")


def _set_path(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        body = body.setdefault(key, {})
    body[last] = value


def body_of(
    reader: FormReader, check: tuple[str, ...] = (), uncheck: tuple[str, ...] = (), **typed: Any
) -> dict[str, Any]:
    """What forms.js `collect` sends after the user fills the form in.

    A string in `typed` is typed into the control of that name (for a select:
    the option value chosen; for radios and checkboxes: the value to tick).
    Any other value (a bool for a checkbox, a list for a box group or a multiple
    select, a number) is sent as the field's value as it stands. `check` and
    `uncheck` tick and untick checkboxes by value (a lone box also by name).
    """
    boxes = {
        key
        for c in reader.controls
        if c.get("type") == "checkbox"
        for key in (_box_value(c), c["name"])
    }
    unknown = (set(check) | set(uncheck)) - boxes
    assert not unknown, f"no checkbox {sorted(unknown)} in #{reader.form_id}"

    body: dict[str, Any] = {}
    groups: dict[str, list[Any]] = {}
    for c in reader.controls:
        name, kind, dtype = c["name"], c.get("type", ""), c.get("data-type") or ""
        if "disabled" in c or "data-skip" in c:
            continue
        text = typed.get(name)
        text = text if isinstance(text, str) else None
        if kind in ("radio", "checkbox"):
            value = _box_value(c)
            keys = {value} if "data-group" in c or kind == "radio" else {value, name}
            if text is not None:
                ticked = value == text
            else:
                ticked = bool(keys & set(check)) or ("checked" in c and not keys & set(uncheck))
            if kind == "radio":
                if ticked:
                    _set_path(body, name, _typed_value(c, value))
                continue
            if "data-group" in c:
                # Several checkboxes with one name make a list of the ticked values.
                group = groups.setdefault(name, [])
                if ticked:
                    group.append(_number(value.strip()) if dtype == "int" else value)
                continue
            if not dtype:
                _set_path(body, name, ticked)
                continue
            field = _typed_value(c, value)
        elif c["tag"] == "select":
            field = _select_value(c, text)
        else:
            field = _typed_value(c, text if text is not None else c.get("value") or "")
        if "data-omit-empty" in c and field in ("", None):
            continue
        _set_path(body, name, field)
    for name, values in groups.items():
        _set_path(body, name, values)
    # Ticked boxes, chosen lists and the like are given as the values they send.
    for name, value in typed.items():
        if not isinstance(value, str):
            _set_path(body, name, value)
    return body


# -- locations -------------------------------------------------------------------


def location_body(**overrides: Any) -> dict[str, Any]:
    """The API's location body as the console's form starts it: one network, no DNS."""
    return api_location_body(**{"allowed_ips": "10.10.0.0/24", "dns": None, **overrides})


async def create_location(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    r = await client.post("/network", json=location_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()
