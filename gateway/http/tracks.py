"""A courier's track (its fixes in a time range) as JSON, GeoJSON (RFC 7946) or GPX 1.1. Pure functions.

GeoJSON: a FeatureCollection of one LineString (the path, when there are two fixes or more) and one
Point per fix with its time, accuracy, speed, course, battery and device. GPX: one track of one
segment, a `trkpt` per fix with its time (and elevation where the phone gave one), as GPS tools,
map apps and OwnTracks' own recorder exchange them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

GPX_NS = "http://www.topografix.com/GPX/1/1"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _time(tst: float) -> str:
    return datetime.fromtimestamp(tst, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def as_json(courier_id: str, start: float, end: float, fixes: list[dict[str, Any]], truncated: bool) -> dict[str, Any]:
    return {"courier_id": courier_id, "from": _time(start), "to": _time(end), "count": len(fixes),
            "truncated": truncated, "fixes": [{**f, "time": _time(f["tst"])} for f in fixes]}


def as_geojson(courier_id: str, start: float, end: float, fixes: list[dict[str, Any]],
               truncated: bool) -> dict[str, Any]:
    features: list[dict[str, Any]] = []
    if len(fixes) >= 2:
        features.append({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[f["lon"], f["lat"]] for f in fixes]},
            "properties": {"courier_id": courier_id, "from": _time(fixes[0]["tst"]), "to": _time(fixes[-1]["tst"]),
                           "points": len(fixes)},
        })
    for f in fixes:
        props = {k: f[k] for k in ("acc", "alt", "vel", "cog", "batt", "device") if f.get(k) is not None}
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [f["lon"], f["lat"]]},
                         "properties": {"courier_id": courier_id, "time": _time(f["tst"]), **props}})
    return {"type": "FeatureCollection", "features": features,
            "properties": {"courier_id": courier_id, "from": _time(start), "to": _time(end), "truncated": truncated}}


def as_gpx(courier_id: str, start: float, end: float, fixes: list[dict[str, Any]]) -> bytes:
    ET.register_namespace("", GPX_NS)
    ET.register_namespace("xsi", _XSI)
    root = ET.Element(f"{{{GPX_NS}}}gpx", {"version": "1.1", "creator": "fieldgate",
                                            f"{{{_XSI}}}schemaLocation": f"{GPX_NS} {GPX_NS}/gpx.xsd"})
    metadata = ET.SubElement(root, f"{{{GPX_NS}}}metadata")
    ET.SubElement(metadata, f"{{{GPX_NS}}}name").text = f"courier {courier_id}, {_time(start)} to {_time(end)}"
    ET.SubElement(metadata, f"{{{GPX_NS}}}time").text = _time(end)
    track = ET.SubElement(root, f"{{{GPX_NS}}}trk")
    ET.SubElement(track, f"{{{GPX_NS}}}name").text = courier_id
    segment = ET.SubElement(track, f"{{{GPX_NS}}}trkseg")
    for f in fixes:
        point = ET.SubElement(segment, f"{{{GPX_NS}}}trkpt", {"lat": f"{f['lat']:.7f}", "lon": f"{f['lon']:.7f}"})
        if f.get("alt") is not None:
            ET.SubElement(point, f"{{{GPX_NS}}}ele").text = f"{f['alt']:.1f}"
        ET.SubElement(point, f"{{{GPX_NS}}}time").text = _time(f["tst"])
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
