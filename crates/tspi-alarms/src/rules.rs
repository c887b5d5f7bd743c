//! The rule file (TOML, SPEC §5 "alarmer"): limit sets on altitude and speed with watch,
//! warning and critical levels, geofences and impact-point boundaries (polygons inline or
//! from GeoJSON or KML), stale tracks, separation between tracks — each selecting sensors
//! by id, range or pattern, with a persistence. Everything is checked when the file is
//! read: a line that does not parse, a field nobody knows, a polygon that is not closed or
//! crosses itself — each is one error naming its line.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::event::{Level, RuleKind};
use crate::geometry::Polygon;

/// Why a rule file cannot be used: the line, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for RulesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for RulesError {}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

// ------------------------------------------------------------------ the file as written

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Ellipsoidal height of the ground impact points are found at.
    #[serde(default)]
    ground_alt_m: f64,
    #[serde(default)]
    limit: Vec<LimitRaw>,
    #[serde(default)]
    geofence: Vec<AreaRaw>,
    #[serde(default)]
    impact: Vec<AreaRaw>,
    #[serde(default)]
    stale: Vec<StaleRaw>,
    #[serde(default)]
    separation: Vec<SeparationRaw>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct LevelsRaw {
    watch: Option<f64>,
    warning: Option<f64>,
    critical: Option<f64>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct PersistenceRaw {
    samples: Option<u32>,
    seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitRaw {
    name: Spanned<String>,
    sensors: Vec<String>,
    field: Spanned<String>,
    below: Option<LevelsRaw>,
    above: Option<LevelsRaw>,
    persistence: Option<PersistenceRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AreaRaw {
    name: Spanned<String>,
    sensors: Vec<String>,
    /// `inside`: the track (or its impact point) must stay inside; `outside`: out.
    keep: Spanned<String>,
    #[serde(default = "warning")]
    level: Spanned<String>,
    polygon: Option<Vec<[f64; 2]>>,
    /// A GeoJSON or KML file (relative to the rule file), and which feature of it.
    file: Option<String>,
    feature: Option<String>,
    persistence: Option<PersistenceRaw>,
}

fn warning() -> Spanned<String> {
    Spanned::new(0..0, "warning".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaleRaw {
    name: Spanned<String>,
    sensors: Vec<String>,
    /// Seconds without a record.
    after: f64,
    #[serde(default = "warning")]
    level: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeparationRaw {
    name: Spanned<String>,
    sensors: Vec<String>,
    /// Distances (m) below which each level is raised.
    below: LevelsRaw,
    persistence: Option<PersistenceRaw>,
}

// ------------------------------------------------------------------ the rules, checked

/// Which sensors a rule watches: ids, ranges `a-b`, decimal prefixes `12*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Pattern>, Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    All,
    Id(u16),
    Range(u16, u16),
    Prefix(String),
}

impl Selector {
    pub fn parse(items: &[String]) -> Result<Selector, String> {
        if items.is_empty() {
            return Err(
                "sensors is empty: name ids, ranges (10000-10099), patterns (12*) or *".into(),
            );
        }
        let mut out = Vec::new();
        for item in items {
            let t = item.trim();
            let bad = || format!("sensors: {t:?} is not an id, a range a-b, a pattern 12* or *");
            out.push(if t == "*" {
                Pattern::All
            } else if let Some(prefix) = t.strip_suffix('*') {
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                Pattern::Prefix(prefix.to_owned())
            } else if let Some((a, b)) = t.split_once('-') {
                let (a, b) = (
                    a.trim().parse::<u16>().map_err(|_| bad())?,
                    b.trim().parse::<u16>().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(format!("sensors: range {t:?} ends before it starts"));
                }
                Pattern::Range(a, b)
            } else {
                Pattern::Id(t.parse().map_err(|_| bad())?)
            });
        }
        Ok(Selector(
            out,
            items.iter().map(|s| s.trim().to_owned()).collect(),
        ))
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.1
    }

    pub fn matches(&self, sensor: u16) -> bool {
        self.0.iter().any(|p| match p {
            Pattern::All => true,
            Pattern::Id(id) => *id == sensor,
            Pattern::Range(a, b) => (*a..=*b).contains(&sensor),
            Pattern::Prefix(prefix) => sensor.to_string().starts_with(prefix.as_str()),
        })
    }
}

/// Thresholds per level (watch, warning, critical).
pub type Thresholds = [Option<f64>; 3];

/// How long a new state must hold before it is taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Persistence {
    Samples(u32),
    Seconds(f64),
}

/// What a limit watches (the discriminant indexes the evaluator's values of a sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Ellipsoidal height of the placed position, m.
    Altitude = 0,
    /// As displays show it: |v| (geocentric), |range rate| (spherical), m/s.
    Speed = 1,
    /// Rate of climb (up velocity, geocentric), m/s.
    Climb = 2,
}

impl Field {
    pub fn unit(self) -> &'static str {
        match self {
            Field::Altitude => "m",
            Field::Speed | Field::Climb => "m/s",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Field::Altitude => "altitude",
            Field::Speed => "speed",
            Field::Climb => "climb",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Limit {
        field: Field,
        below: Thresholds,
        above: Thresholds,
    },
    Geofence {
        polygon: Polygon,
        keep_inside: bool,
        level: Level,
    },
    Impact {
        polygon: Polygon,
        keep_inside: bool,
        level: Level,
    },
    Stale {
        after_ms: i64,
        level: Level,
    },
    Separation {
        below: Thresholds,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub sensors: Selector,
    pub check: Check,
    pub persistence: Persistence,
}

impl Rule {
    pub fn kind(&self) -> RuleKind {
        match self.check {
            Check::Limit { .. } => RuleKind::Limit,
            Check::Geofence { .. } => RuleKind::Geofence,
            Check::Impact { .. } => RuleKind::Impact,
            Check::Stale { .. } => RuleKind::Stale,
            Check::Separation { .. } => RuleKind::Separation,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub ground_alt_m: f64,
}

fn err(text: &str, span: std::ops::Range<usize>, message: String) -> RulesError {
    RulesError {
        line: line_of(text, span.start),
        message,
    }
}

fn name(text: &str, n: &Spanned<String>) -> Result<String, RulesError> {
    let v = n.get_ref();
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(
            text,
            n.span(),
            format!("name {v:?} must be 1-64 letters, digits, '-' or '_'"),
        ));
    }
    Ok(v.clone())
}

fn thresholds(raw: Option<LevelsRaw>, rising: bool) -> Result<Thresholds, String> {
    let Some(r) = raw else { return Ok([None; 3]) };
    let t = [r.watch, r.warning, r.critical];
    if t.iter().flatten().any(|v| !v.is_finite()) {
        return Err("thresholds must be numbers".into());
    }
    let set: Vec<f64> = t.iter().flatten().copied().collect();
    let ordered = set
        .windows(2)
        .all(|w| if rising { w[0] <= w[1] } else { w[0] >= w[1] });
    if !ordered {
        return Err(format!(
            "{} thresholds must {} from watch to warning to critical",
            if rising { "above" } else { "below" },
            if rising { "rise" } else { "fall" }
        ));
    }
    Ok(t)
}

fn persistence(raw: Option<PersistenceRaw>) -> Result<Persistence, String> {
    match raw {
        None => Ok(Persistence::Samples(1)),
        Some(PersistenceRaw {
            samples: Some(n),
            seconds: None,
        }) if n >= 1 => Ok(Persistence::Samples(n)),
        Some(PersistenceRaw {
            samples: None,
            seconds: Some(s),
        }) if s.is_finite() && s >= 0.0 => Ok(Persistence::Seconds(s)),
        _ => Err("persistence is { samples = N } (N ≥ 1) or { seconds = S } (S ≥ 0)".into()),
    }
}

fn level(text: &str, l: &Spanned<String>) -> Result<Level, RulesError> {
    Level::parse(l.get_ref()).ok_or_else(|| {
        err(
            text,
            l.span(),
            format!("level {:?} is not watch, warning or critical", l.get_ref()),
        )
    })
}

/// A polygon given inline or in a GeoJSON / KML file.
fn area(text: &str, a: &AreaRaw, dir: Option<&Path>) -> Result<Polygon, RulesError> {
    let at = a.name.span();
    let ring = match (&a.polygon, &a.file) {
        (Some(p), None) => p.clone(),
        (None, Some(file)) => {
            let path = dir.map_or_else(|| Path::new(file).to_path_buf(), |d| d.join(file));
            let content = std::fs::read_to_string(&path).map_err(|e| {
                err(
                    text,
                    at.clone(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let lower = file.to_ascii_lowercase();
            let found = if lower.ends_with(".kml") {
                crate::import::kml_ring(&content, a.feature.as_deref())
            } else {
                crate::import::geojson_ring(&content, a.feature.as_deref())
            };
            found.map_err(|e| err(text, at.clone(), format!("{}: {e}", path.display())))?
        }
        _ => {
            return Err(err(
                text,
                at,
                "give polygon = [[lat, lon], …] or file = \"….geojson|.kml\"".into(),
            ))
        }
    };
    Polygon::new(ring).map_err(|e| err(text, at, format!("polygon of {:?} {e}", a.name.get_ref())))
}

impl RuleSet {
    /// Read a rule file; a polygon `file` is found relative to it.
    pub fn load(path: &Path) -> Result<RuleSet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        RuleSet::parse(&text, path.parent())
            .map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))
    }

    pub fn parse(text: &str, dir: Option<&Path>) -> Result<RuleSet, RulesError> {
        let file: File = toml::from_str(text).map_err(|e| RulesError {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim().replace('\n', " "),
        })?;
        let mut rules = Vec::new();
        for l in &file.limit {
            let at = l.name.span();
            let field = match l.field.get_ref().as_str() {
                "altitude_m" => Field::Altitude,
                "speed_mps" => Field::Speed,
                "climb_mps" => Field::Climb,
                other => {
                    return Err(err(
                        text,
                        l.field.span(),
                        format!("field {other:?} is not altitude_m, speed_mps or climb_mps"),
                    ))
                }
            };
            let below = thresholds(l.below, false).map_err(|m| err(text, at.clone(), m))?;
            let above = thresholds(l.above, true).map_err(|m| err(text, at.clone(), m))?;
            if below.iter().chain(&above).all(Option::is_none) {
                return Err(err(
                    text,
                    at,
                    "a limit needs below and/or above thresholds".into(),
                ));
            }
            rules.push(Rule {
                name: name(text, &l.name)?,
                sensors: Selector::parse(&l.sensors).map_err(|m| err(text, at.clone(), m))?,
                check: Check::Limit {
                    field,
                    below,
                    above,
                },
                persistence: persistence(l.persistence).map_err(|m| err(text, at.clone(), m))?,
            });
        }
        for (areas, impact) in [(&file.geofence, false), (&file.impact, true)] {
            for a in areas {
                let at = a.name.span();
                let keep_inside = match a.keep.get_ref().as_str() {
                    "inside" => true,
                    "outside" => false,
                    other => {
                        return Err(err(
                            text,
                            a.keep.span(),
                            format!("keep {other:?} is not inside or outside"),
                        ))
                    }
                };
                let polygon = area(text, a, dir)?;
                let level = level(text, &a.level)?;
                rules.push(Rule {
                    name: name(text, &a.name)?,
                    sensors: Selector::parse(&a.sensors).map_err(|m| err(text, at.clone(), m))?,
                    check: if impact {
                        Check::Impact {
                            polygon,
                            keep_inside,
                            level,
                        }
                    } else {
                        Check::Geofence {
                            polygon,
                            keep_inside,
                            level,
                        }
                    },
                    persistence: persistence(a.persistence)
                        .map_err(|m| err(text, at.clone(), m))?,
                });
            }
        }
        for s in &file.stale {
            let at = s.name.span();
            if !(s.after.is_finite() && s.after > 0.0) {
                return Err(err(text, at, "after must be more than 0 seconds".into()));
            }
            rules.push(Rule {
                name: name(text, &s.name)?,
                sensors: Selector::parse(&s.sensors).map_err(|m| err(text, at.clone(), m))?,
                check: Check::Stale {
                    after_ms: (s.after * 1000.0).round() as i64,
                    level: level(text, &s.level)?,
                },
                persistence: Persistence::Samples(1),
            });
        }
        for s in &file.separation {
            let at = s.name.span();
            let below = thresholds(Some(s.below), false).map_err(|m| err(text, at.clone(), m))?;
            if below.iter().all(Option::is_none) || below.iter().flatten().any(|d| *d <= 0.0) {
                return Err(err(
                    text,
                    at,
                    "separation needs below distances (m) more than 0".into(),
                ));
            }
            rules.push(Rule {
                name: name(text, &s.name)?,
                sensors: Selector::parse(&s.sensors).map_err(|m| err(text, at.clone(), m))?,
                check: Check::Separation { below },
                persistence: persistence(s.persistence).map_err(|m| err(text, at.clone(), m))?,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            if !seen.insert(r.name.clone()) {
                let offset = text.find(&format!("\"{}\"", r.name)).unwrap_or(0);
                return Err(RulesError {
                    line: line_of(text, offset),
                    message: format!("two rules are named {:?}", r.name),
                });
            }
        }
        if !file.ground_alt_m.is_finite() {
            return Err(RulesError {
                line: 1,
                message: "ground_alt_m must be a number".into(),
            });
        }
        Ok(RuleSet {
            rules,
            ground_alt_m: file.ground_alt_m,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
ground_alt_m = 700

[[limit]]
name = "floor"
sensors = ["10000-10009", "2*"]
field = "altitude_m"
below = { watch = 3000.0, warning = 2500.0, critical = 2000.0 }
persistence = { samples = 2 }

[[geofence]]
name = "corridor"
sensors = ["*"]
keep = "inside"
polygon = [[34.0, -118.0], [34.0, -117.0], [35.0, -117.0], [35.0, -118.0], [34.0, -118.0]]

[[stale]]
name = "silent"
sensors = ["*"]
after = 3

[[separation]]
name = "too-close"
sensors = ["*"]
below = { warning = 1000.0, critical = 500.0 }
persistence = { seconds = 0.5 }
"#;

    #[test]
    fn a_good_file_reads() {
        let r = RuleSet::parse(GOOD, None).unwrap();
        assert_eq!(r.rules.len(), 4);
        assert_eq!(r.ground_alt_m, 700.0);
        assert!(
            r.rules[0].sensors.matches(10005)
                && r.rules[0].sensors.matches(25)
                && !r.rules[0].sensors.matches(10010)
        );
        assert_eq!(r.rules[0].persistence, Persistence::Samples(2));
        assert_eq!(r.rules[3].persistence, Persistence::Seconds(0.5));
    }

    #[test]
    fn every_mistake_names_its_line() {
        let cases: [(&str, &str, usize); 9] = [
            ("[[limit]]\nname = \"a\"\nsensors = [\"*\"]\nfield = \"altitude_m\"\nbelow = { watch = 1.0 }\ncolour = \"red\"\n", "unknown field `colour`", 6),
            ("[[limit]]\nname = \"a\"\nsensors = [\"*\"\n", "", 3),
            ("[[limit]]\nname = \"a\"\nsensors = [\"*\"]\nfield = \"height\"\nbelow = { watch = 1.0 }\n", "field \"height\"", 4),
            ("[[limit]]\nname = \"a\"\nsensors = [\"*\"]\nfield = \"altitude_m\"\nbelow = { watch = 1.0, critical = 2.0 }\n", "must fall", 2),
            ("\n\n[[geofence]]\nname = \"open\"\nsensors = [\"*\"]\nkeep = \"inside\"\npolygon = [[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]\n", "\"open\" is not closed", 4),
            ("[[geofence]]\nname = \"bow\"\nsensors = [\"*\"]\nkeep = \"inside\"\npolygon = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]\n", "\"bow\" intersects itself", 2),
            ("[[stale]]\nname = \"s\"\nsensors = [\"ten\"]\nafter = 3\n", "\"ten\" is not an id", 2),
            ("[[stale]]\nname = \"s\"\nsensors = [\"*\"]\nafter = 3\nlevel = \"loud\"\n", "level \"loud\"", 5),
            ("[[stale]]\nname = \"s\"\nsensors = [\"*\"]\nafter = 3\n[[stale]]\nname = \"s\"\nsensors = [\"*\"]\nafter = 4\n", "two rules are named", 2),
        ];
        for (text, says, line) in cases {
            let e = RuleSet::parse(text, None).unwrap_err();
            assert!(e.message.contains(says), "{text:?}: {e}");
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn polygons_come_from_geojson_and_kml_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.geojson"),
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"other"},"geometry":{"type":"Point","coordinates":[0,0]}},{"type":"Feature","properties":{"name":"corridor"},"geometry":{"type":"Polygon","coordinates":[[[-118,34],[-117,34],[-117,35],[-118,35],[-118,34]]]}}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("c.kml"),
            r#"<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark><name>zone</name><Polygon><outerBoundaryIs><LinearRing><coordinates>-118,34,0 -117,34,0 -117,35,0 -118,35,0 -118,34,0</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark></Document></kml>"#,
        )
        .unwrap();
        let text = "[[geofence]]\nname = \"a\"\nsensors = [\"*\"]\nkeep = \"inside\"\nfile = \"c.geojson\"\nfeature = \"corridor\"\n\n[[impact]]\nname = \"b\"\nsensors = [\"*\"]\nkeep = \"inside\"\nfile = \"c.kml\"\n";
        let r = RuleSet::parse(text, Some(dir.path())).unwrap();
        for rule in &r.rules {
            let (Check::Geofence { polygon, .. } | Check::Impact { polygon, .. }) = &rule.check
            else {
                panic!()
            };
            assert!(polygon.contains(34.5, -117.5) && !polygon.contains(33.5, -117.5));
        }
        let missing = "[[geofence]]\nname = \"a\"\nsensors = [\"*\"]\nkeep = \"inside\"\nfile = \"nope.geojson\"\n";
        assert!(RuleSet::parse(missing, Some(dir.path()))
            .unwrap_err()
            .message
            .contains("cannot read"));
    }
}
