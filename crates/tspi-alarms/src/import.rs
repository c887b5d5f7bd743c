//! Boundaries drawn elsewhere: the outer ring of a polygon from a GeoJSON file (a
//! Polygon, or a Feature or FeatureCollection holding one; `feature` picks by
//! `properties.name`) or a KML file (a Placemark's Polygon outer boundary; `feature` picks
//! by the Placemark's name), as (lat, lon) vertices.

use serde_json::Value;

fn ring_of(coordinates: &Value) -> Result<Vec<[f64; 2]>, String> {
    let outer = coordinates
        .get(0)
        .and_then(Value::as_array)
        .ok_or("a Polygon's coordinates hold no ring")?;
    outer
        .iter()
        .map(|p| {
            match (
                p.get(0).and_then(Value::as_f64),
                p.get(1).and_then(Value::as_f64),
            ) {
                (Some(lon), Some(lat)) => Ok([lat, lon]),
                _ => Err("a position is not [lon, lat]".to_owned()),
            }
        })
        .collect()
}

pub fn geojson_ring(text: &str, feature: Option<&str>) -> Result<Vec<[f64; 2]>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not GeoJSON: {e}"))?;
    let mut candidates: Vec<(Option<String>, &Value)> = Vec::new();
    fn geometry_of(v: &Value) -> Option<&Value> {
        match v.get("type").and_then(Value::as_str) {
            Some("Polygon") => Some(v),
            Some("Feature") => v
                .get("geometry")
                .filter(|g| g.get("type").and_then(Value::as_str) == Some("Polygon")),
            _ => None,
        }
    }
    match doc.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => {
            for f in doc
                .get("features")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(g) = geometry_of(f) {
                    let name = f
                        .pointer("/properties/name")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    candidates.push((name, g));
                }
            }
        }
        _ => {
            if let Some(g) = geometry_of(&doc) {
                let name = doc
                    .pointer("/properties/name")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                candidates.push((name, g));
            }
        }
    }
    let chosen = match feature {
        Some(name) => candidates.iter().find(|(n, _)| n.as_deref() == Some(name)),
        None => candidates.first(),
    };
    let (_, g) = chosen.ok_or_else(|| match feature {
        Some(name) => format!("no Polygon feature named {name:?}"),
        None => "no Polygon in it".to_owned(),
    })?;
    ring_of(
        g.get("coordinates")
            .ok_or("a Polygon without coordinates")?,
    )
}

pub fn kml_ring(text: &str, feature: Option<&str>) -> Result<Vec<[f64; 2]>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let (mut path, mut name, mut in_outer) = (Vec::<String>::new(), None::<String>, false);
    // The text of the element open now (text and entity references in between).
    let mut content = String::new();
    let mut found = Vec::new();
    loop {
        match reader.read_event().map_err(|e| format!("not KML: {e}"))? {
            Event::Start(e) => {
                let tag = e.local_name().as_ref().to_owned();
                if tag == "Placemark" {
                    name = None;
                }
                if tag == "outerBoundaryIs" {
                    in_outer = true;
                }
                path.push(tag);
                content.clear();
            }
            Event::Text(t) => content.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => match r.xml10_content().as_ref() {
                "amp" => content.push('&'),
                "lt" => content.push('<'),
                "gt" => content.push('>'),
                "quot" => content.push('"'),
                "apos" => content.push('\''),
                other => content.push_str(&format!("&{other};")),
            },
            Event::End(e) => {
                let tag = e.local_name().as_ref().to_owned();
                let parent = path.iter().rev().nth(1).map(String::as_str);
                if tag == "name" && parent == Some("Placemark") {
                    name = Some(content.trim().to_owned());
                }
                if tag == "coordinates" && in_outer {
                    let ring: Result<Vec<[f64; 2]>, String> = content
                        .split_whitespace()
                        .map(|tuple| {
                            let mut parts = tuple.split(',').map(str::parse::<f64>);
                            match (parts.next(), parts.next()) {
                                (Some(Ok(lon)), Some(Ok(lat))) => Ok([lat, lon]),
                                _ => Err(format!("coordinates {tuple:?} are not lon,lat[,alt]")),
                            }
                        })
                        .collect();
                    found.push((name.clone(), ring?));
                }
                if tag == "outerBoundaryIs" {
                    in_outer = false;
                }
                path.pop();
                content.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let chosen = match feature {
        Some(n) => found
            .into_iter()
            .find(|(name, _)| name.as_deref() == Some(n)),
        None => found.into_iter().next(),
    };
    chosen.map(|(_, r)| r).ok_or_else(|| match feature {
        Some(n) => format!("no Polygon in a Placemark named {n:?}"),
        None => "no Polygon in it".to_owned(),
    })
}
