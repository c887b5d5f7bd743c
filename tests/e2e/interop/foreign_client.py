"""A client written with other NATS and CBOR implementations (nats-py, cbor2), doing what a
range engineer's script would do against the kit:

1. send every datagram of the reference vectors to the producer over UDP and decode what
   the producer publishes with cbor2, checking it against the vectors and SPEC §3;
2. publish display commands, a tag and telemetry records to JetStream the way cbor2 writes
   them (datetime tags, byte strings, float64, canonical half floats, integers where floats
   are meant, an indefinite-length map, U+0000 inside a string), plus what must be
   refused: a record that is not CBOR, records with values no datagram carries, a command
   with an unknown unit.

Prints one JSON object on stdout: what it saw, what it published, and every mismatch.
Exit code 0 when it could run at all; the Rust test judges the rest.
"""

import argparse
import asyncio
import datetime
import json
import math
import socket
import sys
import uuid

import cbor2
import nats

FLAGS = [
    "position_x_valid", "position_y_valid", "position_z_valid",
    "velocity_x_valid", "velocity_y_valid", "velocity_z_valid",
    "acceleration_x_valid", "acceleration_y_valid", "acceleration_z_valid",
]
TOP_LEVEL = {"type", "sensor_id", "day", "time_s", "status", "status_flags",
             "recv_epoch_ms", "recv_iso", "payload"}


def parse_rfc3339_utc_ms(text):
    if not text.endswith("Z"):
        raise ValueError(f"not UTC 'Z': {text}")
    t = datetime.datetime.fromisoformat(text[:-1] + "+00:00")
    return round(t.timestamp() * 1000)


def check_record(case, subject, msg_id, data):
    """Mismatches between what the producer published and the reference decoding."""
    e = case["expected"]
    name = case["name"]
    out = []
    try:
        d = cbor2.loads(data)
    except Exception as err:  # a foreign decoder refusing our bytes is the finding
        return [f"{name}: cbor2 cannot decode: {err}"]
    if not isinstance(d, dict):
        return [f"{name}: not a map: {d!r}"]
    if set(d) != TOP_LEVEL:
        out.append(f"{name}: top-level keys differ: {sorted(set(d) ^ TOP_LEVEL)}")
    if subject != e["subject"]:
        out.append(f"{name}: subject {subject} != {e['subject']}")
    if msg_id != e["dedup_id"]:
        out.append(f"{name}: Nats-Msg-Id {msg_id} != {e['dedup_id']}")
    for key in ("type", "sensor_id", "day", "status"):
        if d.get(key) != e[key] or type(d.get(key)) is not type(e[key]):
            out.append(f"{name}: {key} {d.get(key)!r} != {e[key]!r}")
    flags = d.get("status_flags")
    if not isinstance(flags, dict) or set(flags) != set(FLAGS):
        out.append(f"{name}: status_flags keys {flags!r}")
    elif any(flags[k] is not e["status_flags"][k] for k in FLAGS):
        out.append(f"{name}: status_flags {flags} != {e['status_flags']}")
    if not isinstance(d.get("time_s"), (int, float)) or abs(d["time_s"] - e["time_s"]) > 1e-9:
        out.append(f"{name}: time_s {d.get('time_s')!r} != {e['time_s']}")
    payload = d.get("payload")
    if not isinstance(payload, dict) or set(payload) != set(e["payload"]):
        out.append(f"{name}: payload keys {sorted(payload) if isinstance(payload, dict) else payload!r}")
    else:
        for k, v in e["payload"].items():
            got = payload[k]
            if not isinstance(got, (int, float)) or not math.isfinite(got) or abs(got - v) > 1e-9:
                out.append(f"{name}: payload.{k} {got!r} != {v}")
    ms, iso = d.get("recv_epoch_ms"), d.get("recv_iso")
    if type(ms) is not int or not isinstance(iso, str):
        out.append(f"{name}: recv_epoch_ms {ms!r} / recv_iso {iso!r}")
    else:
        try:
            if parse_rfc3339_utc_ms(iso) != ms:
                out.append(f"{name}: recv_iso {iso} is not recv_epoch_ms {ms}")
        except ValueError as err:
            out.append(f"{name}: recv_iso {iso!r}: {err}")
    return out


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nats", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--udp-port", type=int, required=True)
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    cases = json.load(open(a.vectors))["cases"]
    valid = {c["expected"]["dedup_id"]: c for c in cases if c["ok"]}
    nc = await nats.connect(a.nats, user=a.user, password=a.password, connect_timeout=5,
                            max_reconnect_attempts=0)
    js = nc.jetstream(timeout=10)
    seen = {}
    done = asyncio.Event()

    async def on_telemetry(m):
        msg_id = (m.headers or {}).get("Nats-Msg-Id")
        seen.setdefault(msg_id, (m.subject, m.data))
        if len(set(valid) & set(seen)) == len(valid):
            done.set()

    # Core subscriptions see what the producer publishes without a consumer of our own.
    await nc.subscribe("tspi.geocentric.>", cb=on_telemetry)
    await nc.subscribe("tspi.spherical.>", cb=on_telemetry)
    await nc.flush()

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for c in cases:
        udp.sendto(bytes.fromhex(c["hex"]), ("127.0.0.1", a.udp_port))
        await asyncio.sleep(0.002)
    try:
        await asyncio.wait_for(done.wait(), a.timeout)
    except asyncio.TimeoutError:
        pass

    mismatches = []
    for msg_id, c in valid.items():
        if msg_id not in seen:
            mismatches.append(f"{c['name']}: never published (id {msg_id})")
            continue
        subject, data = seen[msg_id]
        mismatches += check_record(c, subject, msg_id, data)
    unexpected = sorted(k or "<no id>" for k in seen if k not in valid)
    if unexpected:
        mismatches.append(f"published but not a valid vector: {unexpected}")

    now = datetime.datetime.now(datetime.timezone.utc)
    iso = now.isoformat()                       # "+00:00", microseconds
    iso_z = iso.replace("+00:00", "Z")
    published = {}

    async def publish(key, subject, body, msg_id):
        ack = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
        published[key] = ack.seq

    commands = {
        # cbor2 writes a datetime as tag 0 around an RFC 3339 string.
        "units": ("tspi.cmd.display.units",
                  {"cmd_id": str(uuid.uuid4()), "name": "display.units", "ts": now,
                   "sender": "py-script", "payload": {"units": "imperial"}}),
        "marker_color": ("tspi.cmd.display.marker_color",
                         {"cmd_id": str(uuid.uuid4()), "name": "display.marker_color", "ts": now,
                          "sender": "py-script", "payload": {"marker_color": "#ff8800"}}),
        "session": ("tspi.cmd.display.session_metadata",
                    {"cmd_id": str(uuid.uuid4()), "name": "display.session_metadata", "ts": iso_z,
                     "sender": "py-script",
                     "payload": {"session_metadata": {"name": "Sortie 9", "id": "S9"}}}),
    }
    for key, (subject, body) in commands.items():
        # The marker colour's time as a JavaScript encoder writes a Date: tag 1, epoch seconds.
        body_bytes = cbor2.dumps(body, datetime_as_timestamp=(key == "marker_color"))
        await publish(key, subject, body_bytes, body["cmd_id"])
    # U+0000 inside a string: valid CBOR and a valid command; PostgreSQL text cannot hold it.
    nul = {"cmd_id": str(uuid.uuid4()), "name": "display.units", "ts": iso_z,
           "sender": "ops\x00desk", "payload": {"units": "imperial"}}
    await publish("command_nul_sender", "tspi.cmd.display.units", cbor2.dumps(nul), nul["cmd_id"])
    # Refused by every reader: a unit the kit does not know.
    bad_cmd = {"cmd_id": str(uuid.uuid4()), "name": "display.units", "ts": iso_z,
               "sender": "py-script", "payload": {"units": "furlongs"}}
    await publish("bad_command", "tspi.cmd.display.units", cbor2.dumps(bad_cmd), bad_cmd["cmd_id"])

    tag_id = str(uuid.uuid4())
    tag = {"id": tag_id, "ts": now, "label": "py tag", "status": "active",
           "creator": "py-script", "updated_ts": iso,
           # A datetime (tag 0) and bytes: what serde's JSON model has no place for.
           "extra": {"priority": 2, "range": "R-2508", "at": now, "blob": b"\x01\x02\xff"}}
    await publish("tag_create", "tags.create", cbor2.dumps(tag), tag_id)
    await publish("tag_broadcast", "tags.broadcast", cbor2.dumps(tag), f"{tag_id}:{iso}:broadcast")

    record = {
        "type": "geocentric", "sensor_id": 777, "day": 200, "time_s": 1, "status": 255,
        "status_flags": {k: True for k in FLAGS},
        "recv_epoch_ms": round(now.timestamp() * 1000),
        "recv_iso": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "payload": {"x_m": 1, "y_m": 2.5, "z_m": -3, "vx_mps": 0, "vy_mps": 0.5, "vz_mps": 0,
                    "ax_mps2": 0, "ay_mps2": 0, "az_mps2": -9.75},
    }
    # canonical=True: shortest floats (half precision here), sorted keys.
    await publish("record_canonical", "tspi.geocentric.777", cbor2.dumps(record, canonical=True),
                  "777:200:1.0000")
    # A streaming encoder's indefinite-length map, float64 everywhere.
    second = dict(record, time_s=2.0)
    body = b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in second.items()) + b"\xff"
    await publish("record_indefinite", "tspi.geocentric.777", body, "777:200:2.0000")
    # As a JavaScript encoder writes it: every number beyond 32 bits is a double.
    js_style = dict(record, time_s=6.0, recv_epoch_ms=float(record["recv_epoch_ms"]))
    await publish("record_js_style", "tspi.geocentric.777", cbor2.dumps(js_style), "777:200:6.0000")
    await publish("not_cbor", "tspi.geocentric.777", b"\xa1\x61", "777:200:3.0000")
    # Well-formed, but no datagram or clock gives these values.
    await publish("record_before_1970", "tspi.geocentric.777",
                  cbor2.dumps(dict(record, time_s=4.0, recv_epoch_ms=-377705116800000)), "777:200:4.0000")
    await publish("record_day_0", "tspi.geocentric.777", cbor2.dumps(dict(record, day=0, time_s=5.0)),
                  "777:0:5.0000")

    # A heartbeat (SPEC §3) with an integral ping and its time as tag 1.
    heartbeat = {"client_id": "py-heartbeat", "state": "FOLLOWING_LIVESTREAM",
                 "channel_id": "livestream", "subject": "tspi.channel.livestream",
                 "override": False, "ts": now, "operator": "py-ops", "ping_ms": 12}
    ack = await js.publish("tspi.ops.status", cbor2.dumps(heartbeat, datetime_as_timestamp=True))
    heartbeat_seq = ack.seq

    await nc.drain()
    print(json.dumps({
        "valid_vectors": len(valid),
        "telemetry_seen": len(set(valid) & set(seen)),
        "mismatches": mismatches,
        "published": published,
        "tag_id": tag_id,
        "commands": {k: b["cmd_id"] for k, (_, b) in commands.items()},
        "bad_command": bad_cmd["cmd_id"],
        "nul_command": nul["cmd_id"],
        "heartbeat_seq": heartbeat_seq,
    }))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as err:
        print(f"foreign client failed: {err!r}", file=sys.stderr)
        sys.exit(1)
