"""Reads an exported file with readers the kit did not write, and prints what they see
as one JSON document on stdout, for tests/e2e/tests/export.rs to compare with the archive:

    export_read.py csv|jsonl|parquet|kml|czml|geojson FILE

- csv: Python's csv module -> {"columns": [...], "rows": [{column: text}]}
- jsonl: json, line by line -> {"rows": [...]}
- parquet: pyarrow (pinned, tests/install-deps.sh) -> {"schema": [[name, type]],
  "metadata": {key: value}, "row_groups": n, "rows": [...]}, timestamps as microseconds
- kml: xml.etree -> {"tracks": [{"name", "when": [...], "coord": [[lon, lat, alt]]}],
  "tags": [{"name", "when", "point"}]}
- czml, geojson: json (checked to be the shape the format requires) -> the document
"""

import csv
import datetime
import json
import sys
import xml.etree.ElementTree as ET

KML = "{http://www.opengis.net/kml/2.2}"
GX = "{http://www.google.com/kml/ext/2.2}"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return {"columns": reader.fieldnames, "rows": rows}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return {"rows": [json.loads(line) for line in f if line.strip()]}


def plain(v):
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(microseconds=1)
    return v


def read_parquet(path):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    table = pf.read()
    meta = {
        k.decode(): v.decode()
        for k, v in (pf.metadata.metadata or {}).items()
        if k.decode().startswith("tspi.")
    }
    return {
        "schema": [[f.name, str(f.type)] for f in table.schema],
        "metadata": meta,
        "row_groups": pf.metadata.num_row_groups,
        "rows": [{k: plain(v) for k, v in row.items()} for row in table.to_pylist()],
    }


def read_kml(path):
    root = ET.parse(path).getroot()
    assert root.tag == KML + "kml", root.tag
    tracks, tags = [], []
    for pm in root.iter(KML + "Placemark"):
        track = pm.find(GX + "Track")
        name = pm.findtext(KML + "name")
        if track is not None:
            assert track.findtext(KML + "altitudeMode") == "absolute"
            tracks.append({
                "name": name,
                "when": [w.text for w in track.findall(KML + "when")],
                "coord": [[float(x) for x in c.text.split()] for c in track.findall(GX + "coord")],
            })
        else:
            point = pm.findtext(f"{KML}Point/{KML}coordinates")
            tags.append({
                "name": name,
                "when": pm.findtext(f"{KML}TimeStamp/{KML}when"),
                "point": [float(x) for x in point.split(",")] if point else None,
            })
    return {"tracks": tracks, "tags": tags}


def read_czml(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    assert isinstance(doc, list) and doc[0]["id"] == "document", "CZML starts with its document packet"
    return doc


def read_geojson(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["type"] == "FeatureCollection"
    for feature in doc["features"]:
        assert feature["type"] == "Feature"
        g = feature["geometry"]
        if g is not None:
            assert g["type"] in ("Point", "LineString")
    return doc


READERS = {
    "csv": read_csv,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "kml": read_kml,
    "czml": read_czml,
    "geojson": read_geojson,
}

if __name__ == "__main__":
    json.dump(READERS[sys.argv[1]](sys.argv[2]), sys.stdout)
