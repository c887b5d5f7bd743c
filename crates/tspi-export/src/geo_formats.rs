//! The formats a globe or a GIS opens, one track per sensor (rows come sensor by sensor,
//! [`crate::Order::Sensor`]):
//! - KML: a `gx:Track` per sensor (`<when>` and `<gx:coord>`, `altitudeMode absolute`),
//!   a colour per sensor, the window's tags as Placemarks (at the origin when there is
//!   one, else without geometry); written with quick-xml.
//! - CZML: a document packet with the clock interval, a packet per sensor with its ECEF
//!   `cartesian` samples (seconds from the track's epoch), and the tags as points.
//! - GeoJSON: a LineString feature per track (a Point when it has one position) with its
//!   times in `properties.times`, tags as features.
//!
//! Records that cannot be placed (a spherical sensor without a site) have no position on
//! a map: they are counted as skipped.

use std::io::{BufWriter, Write};

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use crate::row::{Clock, ExportRow};
use crate::text::{iso_us, push_f64, push_i64, push_iso_us, push_json_str};
use crate::{ExportError, ExportMeta, ExportTag, FormatWriter};

/// Distinct colours for tracks (RGB), picked by sensor id.
const PALETTE: [[u8; 3]; 12] = [
    [0x36, 0xd6, 0xff],
    [0xff, 0x8c, 0x1a],
    [0x7c, 0xe0, 0x3c],
    [0xff, 0x4d, 0x6d],
    [0xb2, 0x8d, 0xff],
    [0xff, 0xe0, 0x4d],
    [0x1a, 0xc9, 0x9e],
    [0xff, 0x7a, 0xd9],
    [0x8f, 0xb8, 0xff],
    [0xd9, 0xa0, 0x66],
    [0xa3, 0xff, 0xa3],
    [0xff, 0xff, 0xff],
];

pub fn colour(sensor_id: u16) -> [u8; 3] {
    PALETTE[(usize::from(sensor_id) * 7) % PALETTE.len()]
}

fn xml_error(e: impl std::fmt::Display) -> ExportError {
    ExportError::Io(std::io::Error::other(e.to_string()))
}

// ---------------------------------------------------------------- KML

pub(crate) struct Kml<W: Write> {
    xml: quick_xml::Writer<BufWriter<W>>,
    clock: Clock,
    origin: Option<tspi_core::geo::Geodetic>,
    /// The open track: its sensor and its coordinates (written after all its `<when>`s,
    /// as gx:Track's schema orders them).
    track: Option<(u16, Vec<[f64; 3]>)>,
    skipped: u64,
}

impl<W: Write> Kml<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Result<Self, ExportError> {
        let mut xml =
            quick_xml::Writer::new_with_indent(BufWriter::with_capacity(1 << 16, out), b' ', 1);
        xml.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        xml.write_event(Event::Start(BytesStart::new("kml").with_attributes([
            ("xmlns", "http://www.opengis.net/kml/2.2"),
            ("xmlns:gx", "http://www.google.com/kml/ext/2.2"),
        ])))?;
        xml.write_event(Event::Start(BytesStart::new("Document")))?;
        let window = format!("{}/{}", iso_us(meta.start_us), iso_us(meta.end_us));
        text_element(&mut xml, "name", &format!("TSPI {} {window}", meta.stream))?;
        xml.write_event(Event::Start(BytesStart::new("ExtendedData")))?;
        for (k, v) in meta.pairs() {
            xml.write_event(Event::Start(
                BytesStart::new("Data").with_attributes([("name", k)]),
            ))?;
            text_element(&mut xml, "value", &v)?;
            xml.write_event(Event::End(BytesEnd::new("Data")))?;
        }
        xml.write_event(Event::End(BytesEnd::new("ExtendedData")))?;
        xml.write_event(Event::Start(BytesStart::new("Folder")))?;
        text_element(&mut xml, "name", "Tracks")?;
        Ok(Kml {
            xml,
            clock: meta.clock,
            origin: meta.origin,
            track: None,
            skipped: 0,
        })
    }

    fn end_track(&mut self) -> Result<(), ExportError> {
        if let Some((_, coords)) = self.track.take() {
            let mut text = String::with_capacity(48);
            for [lon, lat, alt] in coords {
                text.clear();
                use std::fmt::Write as _;
                let _ = write!(text, "{lon} {lat} {alt}");
                text_element(&mut self.xml, "gx:coord", &text)?;
            }
            self.xml
                .write_event(Event::End(BytesEnd::new("gx:Track")))?;
            self.xml
                .write_event(Event::End(BytesEnd::new("Placemark")))?;
        }
        Ok(())
    }

    fn begin_track(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let xml = &mut self.xml;
        xml.write_event(Event::Start(BytesStart::new("Placemark")))?;
        text_element(xml, "name", &r.sensor_id.to_string())?;
        text_element(
            xml,
            "description",
            &format!("sensor {} ({})", r.sensor_id, r.kind),
        )?;
        let [red, green, blue] = colour(r.sensor_id);
        // KML colours are aabbggrr.
        let kml_colour = format!("ff{blue:02x}{green:02x}{red:02x}");
        xml.write_event(Event::Start(BytesStart::new("Style")))?;
        xml.write_event(Event::Start(BytesStart::new("IconStyle")))?;
        text_element(xml, "color", &kml_colour)?;
        xml.write_event(Event::End(BytesEnd::new("IconStyle")))?;
        xml.write_event(Event::Start(BytesStart::new("LineStyle")))?;
        text_element(xml, "color", &kml_colour)?;
        text_element(xml, "width", "2")?;
        xml.write_event(Event::End(BytesEnd::new("LineStyle")))?;
        xml.write_event(Event::End(BytesEnd::new("Style")))?;
        xml.write_event(Event::Start(BytesStart::new("gx:Track")))?;
        text_element(xml, "altitudeMode", "absolute")?;
        self.track = Some((r.sensor_id, Vec::new()));
        Ok(())
    }
}

fn text_element<W: Write>(
    xml: &mut quick_xml::Writer<W>,
    name: &str,
    text: &str,
) -> Result<(), ExportError> {
    xml.write_event(Event::Start(BytesStart::new(name)))?;
    xml.write_event(Event::Text(BytesText::new(text)))?;
    xml.write_event(Event::End(BytesEnd::new(name)))?;
    Ok(())
}

impl<W: Write + Send> FormatWriter for Kml<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let Some(p) = r.position else {
            self.skipped += 1;
            return Ok(());
        };
        if self.track.as_ref().is_none_or(|(s, _)| *s != r.sensor_id) {
            self.end_track()?;
            self.begin_track(r)?;
        }
        text_element(&mut self.xml, "when", &iso_us(r.time_us(self.clock)))?;
        if let Some((_, coords)) = &mut self.track {
            coords.push([p.lon_deg, p.lat_deg, p.alt_m]);
        }
        Ok(())
    }

    fn tags(&mut self, tags: &[ExportTag]) -> Result<(), ExportError> {
        self.end_track()?;
        self.xml.write_event(Event::End(BytesEnd::new("Folder")))?;
        self.xml
            .write_event(Event::Start(BytesStart::new("Folder")))?;
        text_element(&mut self.xml, "name", "Tags")?;
        for t in tags {
            let xml = &mut self.xml;
            xml.write_event(Event::Start(
                BytesStart::new("Placemark")
                    .with_attributes([("id", format!("tag-{}", t.id).as_str())]),
            ))?;
            text_element(xml, "name", &t.label)?;
            let mut about = format!("tag {} ({})", t.id, t.status);
            if let Some(c) = &t.creator {
                about.push_str(&format!(" by {c}"));
            }
            if let Some(n) = &t.notes {
                about.push_str(&format!(": {n}"));
            }
            text_element(xml, "description", &about)?;
            xml.write_event(Event::Start(BytesStart::new("TimeStamp")))?;
            text_element(xml, "when", &iso_us(t.at_us))?;
            xml.write_event(Event::End(BytesEnd::new("TimeStamp")))?;
            if let Some(o) = self.origin {
                xml.write_event(Event::Start(BytesStart::new("Point")))?;
                text_element(xml, "altitudeMode", "absolute")?;
                text_element(
                    xml,
                    "coordinates",
                    &format!("{},{},{}", o.lon_deg, o.lat_deg, o.alt_m),
                )?;
                xml.write_event(Event::End(BytesEnd::new("Point")))?;
            }
            xml.write_event(Event::End(BytesEnd::new("Placemark")))?;
        }
        Ok(())
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.end_track()?;
        for name in ["Folder", "Document", "kml"] {
            self.xml.write_event(Event::End(BytesEnd::new(name)))?;
        }
        self.xml.get_mut().write_all(b"\n")?;
        self.xml.get_mut().flush()?;
        Ok(())
    }
}

// ---------------------------------------------------------------- CZML

pub(crate) struct Czml<W: Write> {
    out: BufWriter<W>,
    clock: Clock,
    origin: Option<tspi_core::geo::Geodetic>,
    end_us: i64,
    /// The open packet: sensor, epoch and last sample time (µs).
    track: Option<(u16, i64, i64)>,
    buf: Vec<u8>,
    skipped: u64,
}

impl<W: Write> Czml<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Result<Self, ExportError> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let mut b = Vec::new();
        b.extend_from_slice(b"[\n{\"id\":\"document\",\"version\":\"1.0\",\"name\":");
        push_json_str(&mut b, &format!("TSPI {}", meta.stream));
        b.extend_from_slice(b",\"clock\":{\"interval\":\"");
        push_iso_us(&mut b, meta.start_us);
        b.push(b'/');
        push_iso_us(&mut b, meta.end_us);
        b.extend_from_slice(b"\",\"currentTime\":\"");
        push_iso_us(&mut b, meta.start_us);
        b.extend_from_slice(
            b"\",\"multiplier\":1,\"range\":\"LOOP_STOP\",\"step\":\"SYSTEM_CLOCK_MULTIPLIER\"},\"properties\":{",
        );
        for (i, (k, v)) in meta.pairs().into_iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            push_json_str(&mut b, &format!("tspi_{k}"));
            b.push(b':');
            push_json_str(&mut b, &v);
        }
        b.extend_from_slice(b"}}");
        out.write_all(&b)?;
        Ok(Czml {
            out,
            clock: meta.clock,
            origin: meta.origin,
            end_us: meta.end_us,
            track: None,
            buf: Vec::with_capacity(128),
            skipped: 0,
        })
    }

    fn end_track(&mut self) -> Result<(), ExportError> {
        if let Some((_, epoch, last)) = self.track.take() {
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(b"]},\"availability\":\"");
            push_iso_us(b, epoch);
            b.push(b'/');
            push_iso_us(b, last);
            b.extend_from_slice(b"\"}");
            self.out.write_all(b)?;
        }
        Ok(())
    }
}

fn rgba(sensor_id: u16) -> String {
    let [r, g, b] = colour(sensor_id);
    format!("{{\"rgba\":[{r},{g},{b},255]}}")
}

impl<W: Write + Send> FormatWriter for Czml<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let Some([x, y, z]) = r.ecef else {
            self.skipped += 1;
            return Ok(());
        };
        let t = r.time_us(self.clock);
        if self.track.is_none_or(|(s, _, _)| s != r.sensor_id) {
            self.end_track()?;
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(b",\n{\"id\":\"sensor-");
            push_i64(b, i64::from(r.sensor_id));
            b.extend_from_slice(b"\",\"name\":\"");
            push_i64(b, i64::from(r.sensor_id));
            b.extend_from_slice(b"\",\"description\":\"sensor ");
            push_i64(b, i64::from(r.sensor_id));
            b.extend_from_slice(
                format!(
                    " ({})\",\"point\":{{\"pixelSize\":6,\"color\":{}}}",
                    r.kind,
                    rgba(r.sensor_id)
                )
                .as_bytes(),
            );
            b.extend_from_slice(
                format!(
                    ",\"path\":{{\"width\":2,\"leadTime\":0,\"trailTime\":60,\"material\":{{\"solidColor\":{{\"color\":{}}}}}}}",
                    rgba(r.sensor_id)
                )
                .as_bytes(),
            );
            b.extend_from_slice(
                b",\"position\":{\"interpolationAlgorithm\":\"LINEAR\",\"epoch\":\"",
            );
            push_iso_us(b, t);
            b.extend_from_slice(b"\",\"cartesian\":[");
            self.out.write_all(b)?;
            self.track = Some((r.sensor_id, t, t));
        } else {
            self.out.write_all(b",")?;
        }
        let Some((_, epoch, last)) = &mut self.track else {
            return Ok(());
        };
        *last = t;
        let b = &mut self.buf;
        b.clear();
        push_f64(b, (t - *epoch) as f64 / 1e6);
        for v in [x, y, z] {
            b.push(b',');
            push_f64(b, v);
        }
        self.out.write_all(b)?;
        Ok(())
    }

    fn tags(&mut self, tags: &[ExportTag]) -> Result<(), ExportError> {
        self.end_track()?;
        for t in tags {
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(b",\n{\"id\":");
            push_json_str(b, &format!("tag-{}", t.id));
            b.extend_from_slice(b",\"name\":");
            push_json_str(b, &t.label);
            b.extend_from_slice(b",\"description\":");
            push_json_str(
                b,
                &format!("tag {} ({}) at {}", t.id, t.status, iso_us(t.at_us)),
            );
            b.extend_from_slice(b",\"availability\":\"");
            push_iso_us(b, t.at_us);
            b.push(b'/');
            push_iso_us(b, self.end_us.max(t.at_us));
            b.extend_from_slice(b"\",\"label\":{\"text\":");
            push_json_str(b, &t.label);
            b.extend_from_slice(b",\"verticalOrigin\":\"BOTTOM\"},\"point\":{\"pixelSize\":10,\"color\":{\"rgba\":[255,224,77,255]}}");
            if let Some(o) = self.origin {
                b.extend_from_slice(b",\"position\":{\"cartographicDegrees\":[");
                push_f64(b, o.lon_deg);
                b.push(b',');
                push_f64(b, o.lat_deg);
                b.push(b',');
                push_f64(b, o.alt_m);
                b.extend_from_slice(b"]}");
            }
            b.push(b'}');
            self.out.write_all(b)?;
        }
        Ok(())
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.end_track()?;
        self.out.write_all(b"\n]\n")?;
        self.out.flush()?;
        Ok(())
    }
}

// ---------------------------------------------------------------- GeoJSON

pub(crate) struct GeoJson<W: Write> {
    out: BufWriter<W>,
    clock: Clock,
    origin: Option<tspi_core::geo::Geodetic>,
    /// The open feature: sensor, kind, its times (written after the geometry), and its
    /// first position while it is the only one (a one-position track is a Point).
    track: Option<Track>,
    buf: Vec<u8>,
    features: u64,
    skipped: u64,
}

struct Track {
    sensor_id: u16,
    kind: tspi_core::MessageKind,
    times: Vec<i64>,
    first: Option<[f64; 3]>,
}

impl<W: Write> GeoJson<W> {
    pub fn new(meta: &ExportMeta, out: W) -> Result<Self, ExportError> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let mut b = Vec::new();
        b.extend_from_slice(b"{\"type\":\"FeatureCollection\",\"tspi\":{");
        for (i, (k, v)) in meta.pairs().into_iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            push_json_str(&mut b, k);
            b.push(b':');
            push_json_str(&mut b, &v);
        }
        b.extend_from_slice(b"},\"features\":[");
        out.write_all(&b)?;
        Ok(GeoJson {
            out,
            clock: meta.clock,
            origin: meta.origin,
            track: None,
            buf: Vec::with_capacity(128),
            features: 0,
            skipped: 0,
        })
    }

    fn feature_start(&mut self) -> Result<(), ExportError> {
        self.out
            .write_all(if self.features == 0 { b"\n" } else { b",\n" })?;
        self.features += 1;
        Ok(())
    }

    fn end_track(&mut self) -> Result<(), ExportError> {
        let Some(t) = self.track.take() else {
            return Ok(());
        };
        let b = &mut self.buf;
        b.clear();
        if let Some([lon, lat, alt]) = t.first {
            // One position: a Point, whole.
            b.extend_from_slice(b"\"type\":\"Point\",\"coordinates\":[");
            push_coords(b, lon, lat, alt);
            b.extend_from_slice(b"]}");
        } else {
            b.extend_from_slice(b"]}");
        }
        b.extend_from_slice(b",\"properties\":{\"sensor_id\":");
        push_i64(b, i64::from(t.sensor_id));
        b.extend_from_slice(b",\"type\":\"");
        b.extend_from_slice(t.kind.as_str().as_bytes());
        b.extend_from_slice(b"\",\"clock\":\"");
        b.extend_from_slice(self.clock.as_str().as_bytes());
        b.extend_from_slice(b"\",\"times\":[");
        for (i, us) in t.times.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.push(b'"');
            push_iso_us(b, *us);
            b.push(b'"');
        }
        b.extend_from_slice(b"]}}");
        self.out.write_all(b)?;
        Ok(())
    }
}

fn push_coords(b: &mut Vec<u8>, lon: f64, lat: f64, alt: f64) {
    push_f64(b, lon);
    b.push(b',');
    push_f64(b, lat);
    b.push(b',');
    push_f64(b, alt);
}

impl<W: Write + Send> FormatWriter for GeoJson<W> {
    fn row(&mut self, r: &ExportRow) -> Result<(), ExportError> {
        let Some(p) = r.position else {
            self.skipped += 1;
            return Ok(());
        };
        if self
            .track
            .as_ref()
            .is_none_or(|t| t.sensor_id != r.sensor_id)
        {
            self.end_track()?;
            self.feature_start()?;
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(b"{\"type\":\"Feature\",\"id\":\"sensor-");
            push_i64(b, i64::from(r.sensor_id));
            b.extend_from_slice(b"\",\"geometry\":{");
            self.out.write_all(b)?;
            self.track = Some(Track {
                sensor_id: r.sensor_id,
                kind: r.kind,
                times: Vec::new(),
                first: Some([p.lon_deg, p.lat_deg, p.alt_m]),
            });
        } else if let Some(t) = &mut self.track {
            let b = &mut self.buf;
            b.clear();
            if let Some([lon, lat, alt]) = t.first.take() {
                // A second position: the track is a LineString.
                b.extend_from_slice(b"\"type\":\"LineString\",\"coordinates\":[[");
                push_coords(b, lon, lat, alt);
                b.push(b']');
            }
            b.extend_from_slice(b",[");
            push_coords(b, p.lon_deg, p.lat_deg, p.alt_m);
            b.push(b']');
            self.out.write_all(b)?;
        }
        if let Some(t) = &mut self.track {
            t.times.push(r.time_us(self.clock));
        }
        Ok(())
    }

    fn tags(&mut self, tags: &[ExportTag]) -> Result<(), ExportError> {
        self.end_track()?;
        for t in tags {
            self.feature_start()?;
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(b"{\"type\":\"Feature\",\"id\":");
            push_json_str(b, &format!("tag-{}", t.id));
            b.extend_from_slice(b",\"geometry\":");
            match self.origin {
                Some(o) => {
                    b.extend_from_slice(b"{\"type\":\"Point\",\"coordinates\":[");
                    push_coords(b, o.lon_deg, o.lat_deg, o.alt_m);
                    b.extend_from_slice(b"]}");
                }
                None => b.extend_from_slice(b"null"),
            }
            b.extend_from_slice(b",\"properties\":{\"tag\":");
            push_json_str(b, &t.id);
            b.extend_from_slice(b",\"label\":");
            push_json_str(b, &t.label);
            b.extend_from_slice(b",\"time\":\"");
            push_iso_us(b, t.at_us);
            b.extend_from_slice(b"\",\"status\":");
            push_json_str(b, &t.status);
            b.extend_from_slice(b"}}");
            self.out.write_all(b)?;
        }
        Ok(())
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.end_track()?;
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(())
    }
}

impl From<quick_xml::Error> for ExportError {
    fn from(e: quick_xml::Error) -> Self {
        xml_error(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_rows::{meta, rows, Shared};
    use crate::Format;

    fn by_sensor() -> Vec<ExportRow> {
        let mut r = rows();
        r.sort_by_key(|r| (r.sensor_id, r.stream_seq));
        r
    }

    fn tags() -> Vec<ExportTag> {
        vec![ExportTag {
            id: "t1".into(),
            at_us: meta().start_us + 1_500_000,
            label: "pass <1> & \"2\"".into(),
            creator: Some("ops".into()),
            status: "active".into(),
            notes: None,
        }]
    }

    fn write(format: Format) -> String {
        let buf = Shared::default();
        let mut w = crate::writer(format, &meta(), buf.clone()).unwrap();
        for r in by_sensor() {
            w.row(&r).unwrap();
        }
        w.tags(&tags()).unwrap();
        assert_eq!(w.skipped(), 0);
        w.finish().unwrap();
        buf.text()
    }

    #[test]
    fn czml_positions_are_the_rows_ecef() {
        let doc: serde_json::Value = serde_json::from_str(&write(Format::Czml)).unwrap();
        let packets = doc.as_array().unwrap();
        assert_eq!(packets[0]["id"], "document");
        assert_eq!(packets.len(), 1 + 2 + 1);
        let sensor = &packets[1];
        assert_eq!(sensor["id"], "sensor-10");
        let samples = sensor["position"]["cartesian"].as_array().unwrap();
        let expected: Vec<ExportRow> = by_sensor()
            .into_iter()
            .filter(|r| r.sensor_id == 10)
            .collect();
        assert_eq!(samples.len(), expected.len() * 4);
        for (s, r) in samples.chunks(4).zip(&expected) {
            let ecef = r.ecef.unwrap();
            for i in 0..3 {
                assert_eq!(s[i + 1].as_f64().unwrap(), ecef[i]);
            }
        }
        assert_eq!(packets[3]["name"], "pass <1> & \"2\"");
    }

    #[test]
    fn geojson_tracks_are_line_strings_with_their_times() {
        let doc: serde_json::Value = serde_json::from_str(&write(Format::GeoJson)).unwrap();
        let features = doc["features"].as_array().unwrap();
        assert_eq!(features.len(), 3);
        let f = &features[0];
        assert_eq!(f["geometry"]["type"], "LineString");
        let coords = f["geometry"]["coordinates"].as_array().unwrap();
        let times = f["properties"]["times"].as_array().unwrap();
        assert_eq!(coords.len(), 30);
        assert_eq!(times.len(), 30);
        let first = &by_sensor()[0];
        assert_eq!(
            coords[0][1].as_f64().unwrap(),
            first.position.unwrap().lat_deg
        );
        assert_eq!(times[0].as_str().unwrap(), iso_us(first.recv_us));
        assert_eq!(features[2]["properties"]["label"], "pass <1> & \"2\"");
    }

    #[test]
    fn a_single_position_is_a_point() {
        let buf = Shared::default();
        let mut w = crate::writer(Format::GeoJson, &meta(), buf.clone()).unwrap();
        w.row(&by_sensor()[0]).unwrap();
        w.finish().unwrap();
        let doc: serde_json::Value = serde_json::from_str(&buf.text()).unwrap();
        assert_eq!(doc["features"][0]["geometry"]["type"], "Point");
    }

    #[test]
    fn kml_is_xml_with_a_track_per_sensor() {
        let text = write(Format::Kml);
        let mut reader = quick_xml::Reader::from_str(&text);
        let (mut whens, mut coords, mut tracks) = (0, 0, 0);
        loop {
            match reader.read_event().unwrap() {
                quick_xml::events::Event::Start(e) => match e.name().as_ref() {
                    "when" => whens += 1,
                    "gx:coord" => coords += 1,
                    "gx:Track" => tracks += 1,
                    _ => {}
                },
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!((tracks, coords), (2, 60));
        assert_eq!(whens, 60 + 1, "and the tag's TimeStamp");
        assert!(
            text.contains("pass &lt;1&gt; &amp; &quot;2&quot;"),
            "{text}"
        );
    }
}
