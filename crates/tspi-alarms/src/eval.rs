//! The evaluator: samples in (in stream order), alarm transitions out. Pure — the clock
//! is the samples' receive time, and `tick(now)` for what silence and shelving need — so
//! the same input gives the same transitions, which is what lets a restarted daemon
//! publish again exactly what it had published (same id, same sequence number).
//!
//! Each sensor keeps a slot per rule that selects it, made the first time it is heard;
//! a sample walks those slots and nothing else. A new state (raised, another level,
//! cleared) is taken once it has held for the rule's persistence — the same on the way up
//! and on the way down, so a value dithering at a threshold does not flap.

use std::collections::HashMap;
use std::sync::Arc;

use tspi_core::geo::{geodetic_to_ecef, Geodetic};
use tspi_core::{RecordPayload, TelemetryRecord};
use tspi_display::Placement;

use crate::event::{AlarmEvent, EventKind, Level, RuleKind};
use crate::geometry::{enu_velocity, impact_point};
use crate::rules::{Check, Field, Persistence, Rule, RuleSet, Thresholds};

/// A partner's position counts for separation this long after it was reported.
pub const FRESH_MS: i64 = 2_000;

/// What the evaluator needs of one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub sensor: u16,
    /// Receive time, ms since the epoch.
    pub at_ms: i64,
    pub position: Option<Geodetic>,
    pub ecef: Option<[f64; 3]>,
    pub speed_mps: f64,
    /// East/north/up velocity (geocentric records).
    pub velocity: Option<[f64; 3]>,
}

impl Sample {
    /// A record placed as every display places it.
    pub fn from_record(r: &TelemetryRecord, placement: &Placement) -> Sample {
        if let RecordPayload::Geocentric(g) = r.payload {
            // What `Placement::fix` does for a geocentric record, without the heading this
            // does not need (the alarmer places every record it evaluates).
            let position = tspi_core::geo::ecef_to_geodetic(g.x_m, g.y_m, g.z_m);
            let v = [g.vx_mps, g.vy_mps, g.vz_mps];
            let horizontal = g.x_m.hypot(g.y_m);
            let velocity = position.map(|p| {
                if horizontal > 1.0 {
                    // The longitude's sine and cosine straight from x and y: one sine
                    // and cosine fewer than `enu_velocity`.
                    let (slon, clon) = (g.y_m / horizontal, g.x_m / horizontal);
                    let (slat, clat) = p.lat_deg.to_radians().sin_cos();
                    [
                        -slon * v[0] + clon * v[1],
                        -slat * clon * v[0] - slat * slon * v[1] + clat * v[2],
                        clat * clon * v[0] + clat * slon * v[1] + slat * v[2],
                    ]
                } else {
                    enu_velocity(&p, v)
                }
            });
            return Sample {
                sensor: r.sensor_id,
                at_ms: r.recv_epoch_ms,
                position,
                ecef: Some([g.x_m, g.y_m, g.z_m]),
                speed_mps: (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt(),
                velocity,
            };
        }
        let fix = placement.fix(r);
        Sample {
            sensor: r.sensor_id,
            at_ms: r.recv_epoch_ms,
            position: fix.position,
            ecef: fix
                .position
                .map(|p| geodetic_to_ecef(p.lat_deg, p.lon_deg, p.alt_m)),
            speed_mps: fix.speed_mps,
            velocity: None,
        }
    }
}

/// What decided a state: the value and the threshold it is measured against.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    level: Option<Level>,
    value: Option<f64>,
    threshold: Option<f64>,
}

impl Reading {
    const CLEAR: Reading = Reading {
        level: None,
        value: None,
        threshold: None,
    };
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Pending {
    level: Option<Level>,
    since_ms: i64,
    samples: u32,
}

/// One alarm's state. Every sample walks its sensor's slots, so they are kept small: what
/// only a transition needs is in `record`, made at the alarm's first transition (most
/// slots never have one).
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    /// The rule's index.
    rule: u32,
    level: Option<Level>,
    pending: Option<Pending>,
    /// The latest value that decided while active (NaN: none).
    value: f64,
    record: Option<Box<SlotRecord>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct SlotRecord {
    acknowledged: bool,
    operator: Option<String>,
    shelved_until_ms: Option<i64>,
    seq: u64,
    threshold: Option<f64>,
    at_ms: i64,
}

static NO_RECORD: SlotRecord = SlotRecord {
    acknowledged: false,
    operator: None,
    shelved_until_ms: None,
    seq: 0,
    threshold: None,
    at_ms: 0,
};

impl Slot {
    fn new(rule: usize) -> Slot {
        Slot {
            rule: rule as u32,
            level: None,
            pending: None,
            value: f64::NAN,
            record: None,
        }
    }

    fn rec(&self) -> &SlotRecord {
        self.record.as_deref().unwrap_or(&NO_RECORD)
    }

    fn rec_mut(&mut self) -> &mut SlotRecord {
        self.record.get_or_insert_with(Default::default)
    }

    fn value(&self) -> Option<f64> {
        (!self.value.is_nan()).then_some(self.value)
    }
}

/// A set of rules some sensors share, in walking order: the limits first, packed
/// (`limits[k]` is rule `ids[k]`), then the rest.
#[derive(Debug, Default)]
struct Selection {
    ids: Vec<u32>,
    /// The field (as an index into a sample's values), below and above thresholds.
    limits: Vec<(usize, [f64; 3], [f64; 3])>,
}

#[derive(Debug, Default)]
struct SensorSlots {
    /// The rules that select this sensor (separation aside), shared by every sensor with
    /// the same selection.
    selection: Arc<Selection>,
    /// Per rule, the settled level (`settled_code`), or `UNSETTLED` while a new state is
    /// pending: a sample whose reading equals a clear settled state goes no further, so
    /// it reads a byte per rule instead of the slot.
    settled: Vec<u8>,
    /// A slot per rule, in the same order.
    slots: Vec<Slot>,
    last_ms: i64,
}

const UNSETTLED: u8 = 0xff;

fn level_code(level: Option<Level>) -> u8 {
    match level {
        None => 0,
        Some(Level::Watch) => 1,
        Some(Level::Warning) => 2,
        Some(Level::Critical) => 3,
    }
}

fn settled_code(slot: &Slot) -> u8 {
    if slot.pending.is_some() {
        UNSETTLED
    } else {
        level_code(slot.level)
    }
}

/// What a sample's walk needs of a rule, packed: thresholds as plain floats (NaN where a
/// level has none, so a comparison is simply false), the polygon by reference.
#[derive(Debug, Clone, Copy)]
enum Compiled {
    Limit {
        field: Field,
        below: [f64; 3],
        above: [f64; 3],
    },
    Area {
        impact: bool,
        keep_inside: bool,
        level: Level,
    },
    Stale,
    Separation,
}

fn compile(rule: &Rule) -> Compiled {
    let flat = |t: &Thresholds| t.map(|x| x.unwrap_or(f64::NAN));
    match &rule.check {
        Check::Limit {
            field,
            below,
            above,
        } => Compiled::Limit {
            field: *field,
            below: flat(below),
            above: flat(above),
        },
        Check::Geofence {
            keep_inside, level, ..
        } => Compiled::Area {
            impact: false,
            keep_inside: *keep_inside,
            level: *level,
        },
        Check::Impact {
            keep_inside, level, ..
        } => Compiled::Area {
            impact: true,
            keep_inside: *keep_inside,
            level: *level,
        },
        Check::Stale { .. } => Compiled::Stale,
        Check::Separation { .. } => Compiled::Separation,
    }
}

/// The level code (`level_code`) `level_of_flat` would find.
#[inline]
fn limit_code(value: f64, below: &[f64; 3], above: &[f64; 3]) -> u8 {
    let mut code = 0;
    for l in 0..3 {
        if value < below[l] || value > above[l] {
            code = l as u8 + 1;
        }
    }
    code
}

/// The most severe level whose threshold `value` is past (`below`: under it, `above`:
/// over it), as `level_of` does for `Thresholds`.
fn level_of_flat(value: f64, below: &[f64; 3], above: &[f64; 3]) -> Reading {
    for i in (0..3).rev() {
        let t = if value < below[i] {
            below[i]
        } else if value > above[i] {
            above[i]
        } else {
            continue;
        };
        return Reading {
            level: Some(Level::ALL[i]),
            value: Some(value),
            threshold: Some(t),
        };
    }
    Reading {
        level: None,
        value: Some(value),
        threshold: None,
    }
}

/// A sensor, its latest position (ECEF) and the time of it.
type Located = (u16, [f64; 3], i64);

/// A separation rule's latest positions and pair states.
#[derive(Debug, Default)]
struct SeparationState {
    /// Each sensor's grid cell.
    cell_of: BySensor<[i64; 3]>,
    /// Grid cell → the sensors in it with their latest position (ECEF) and time.
    cells: FastMap<[i64; 3], Vec<Located>>,
    pairs: FastMap<(u16, u16), Slot>,
    /// Each sensor's partners with a pair slot.
    partners: BySensor<Vec<u16>>,
    /// The sensors a sample is measured against, and its partners no longer near (kept
    /// to reuse their allocations).
    scratch: Vec<Located>,
    gone: Vec<u16>,
}

/// Sensor ids (and grid cells) come from the range's own sensors, through the rules' selection:
/// a multiply spreads them, and SipHash's cost per sample is not needed.
#[derive(Debug, Default, Clone, Copy)]
struct SensorHasher(u64);

impl std::hash::Hasher for SensorHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = (self.0.rotate_left(16) ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = (self.0.rotate_left(21) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_i64(n as i64);
    }
}

/// Maps keyed by sensor ids, pairs of them and grid cells.
type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<SensorHasher>>;
type BySensor<V> = FastMap<u16, V>;

#[derive(Debug)]
pub struct Evaluator {
    rules: Arc<RuleSet>,
    /// `rules`, packed for the walk, index for index.
    compiled: Vec<Compiled>,
    sensors: BySensor<SensorSlots>,
    /// Each distinct selection of rules, shared by the sensors it selects.
    selections: HashMap<Vec<u32>, Arc<Selection>>,
    separations: HashMap<usize, SeparationState>,
    /// Rule indices of separation rules (their slots are per pair).
    separation_rules: Vec<usize>,
}

fn level_of(value: f64, below: &Thresholds, above: &Thresholds) -> Reading {
    // The highest level whose threshold the value is past.
    for (i, l) in Level::ALL.iter().enumerate().rev() {
        if let Some(t) = below[i] {
            if value < t {
                return Reading {
                    level: Some(*l),
                    value: Some(value),
                    threshold: Some(t),
                };
            }
        }
        if let Some(t) = above[i] {
            if value > t {
                return Reading {
                    level: Some(*l),
                    value: Some(value),
                    threshold: Some(t),
                };
            }
        }
    }
    Reading {
        level: None,
        value: Some(value),
        threshold: None,
    }
}

fn unit(rule: &Rule) -> &'static str {
    match &rule.check {
        Check::Limit { field, .. } => field.unit(),
        Check::Geofence { .. } | Check::Impact { .. } => "",
        Check::Stale { .. } => "s",
        Check::Separation { .. } => "m",
    }
}

/// One line for a person: the alarm's condition, and for an operator's action who did it
/// (a display shows an alarm's latest transition, so an acknowledged alarm still says
/// what it is about).
fn describe(rule: &Rule, sensors: &[u16], event: EventKind, slot: &Slot) -> String {
    let who = match sensors {
        [a, b] => format!("{a} and {b}"),
        [a] => a.to_string(),
        _ => String::new(),
    };
    let (value, threshold) = (slot.value(), slot.rec().threshold);
    let what = match &rule.check {
        Check::Limit { field, .. } => match (value, threshold) {
            (Some(v), Some(t)) => format!(
                "{} {v:.1} {} {} {t:.1}",
                field.name(),
                field.unit(),
                if v < t { "below" } else { "above" }
            ),
            (Some(v), None) => format!("{} {v:.1} {}", field.name(), field.unit()),
            _ => field.name().to_owned(),
        },
        Check::Geofence { keep_inside, .. } => format!(
            "{} the boundary",
            if *keep_inside { "outside" } else { "inside" }
        ),
        Check::Impact { keep_inside, .. } => format!(
            "impact point {} the boundary",
            if *keep_inside { "outside" } else { "inside" }
        ),
        Check::Stale { .. } => format!("silent {:.1} s", value.unwrap_or(0.0)),
        Check::Separation { .. } => format!("{:.0} m apart", value.unwrap_or(0.0)),
    };
    let condition = match slot.level {
        Some(l) => format!("{} {}: {who} {what}", rule.name, l.as_str()),
        None => format!("{} cleared: {who}", rule.name),
    };
    let operator = slot.rec().operator.as_deref().unwrap_or("?");
    match event {
        EventKind::Raised | EventKind::Level | EventKind::Cleared => condition,
        EventKind::Acknowledged => format!("{condition} (acknowledged by {operator})"),
        EventKind::Shelved => format!("{condition} (shelved by {operator})"),
        EventKind::Unshelved => format!("{condition} (back from the shelf)"),
    }
}

fn alarm_id(rule: &Rule, sensors: &[u16]) -> String {
    match sensors {
        [a, b] => format!("{}/{a}-{b}", rule.name),
        [a] => format!("{}/{a}", rule.name),
        _ => rule.name.clone(),
    }
}

fn event(rule: &Rule, sensors: &[u16], slot: &Slot, kind: EventKind, at_ms: i64) -> AlarmEvent {
    AlarmEvent {
        id: alarm_id(rule, sensors),
        rule: rule.name.clone(),
        kind: rule.kind(),
        sensors: sensors.to_vec(),
        event: kind,
        level: slot.level,
        active: slot.level.is_some(),
        value: slot.value(),
        threshold: slot.rec().threshold,
        unit: unit(rule).to_owned(),
        at_ms,
        at: tspi_core::rfc3339::format_utc_millis(at_ms),
        acknowledged: slot.rec().acknowledged,
        operator: slot.rec().operator.clone(),
        shelved_until_ms: slot.rec().shelved_until_ms,
        seq: slot.rec().seq,
        text: describe(rule, sensors, kind, slot),
    }
}

/// Feed one reading into a slot; a transition when the new state has held long enough.
fn observe(
    rule: &Rule,
    sensors: &[u16],
    slot: &mut Slot,
    r: Reading,
    at_ms: i64,
    out: &mut Vec<AlarmEvent>,
) {
    if r.level == slot.level {
        slot.pending = None;
        if slot.level.is_some() {
            slot.value = r.value.unwrap_or(f64::NAN);
        }
        return;
    }
    let p = match &mut slot.pending {
        Some(p) if p.level == r.level => p,
        other => other.insert(Pending {
            level: r.level,
            since_ms: at_ms,
            samples: 0,
        }),
    };
    p.samples += 1;
    let held = match rule.persistence {
        Persistence::Samples(n) => p.samples >= n,
        Persistence::Seconds(s) => (at_ms - p.since_ms) as f64 >= s * 1000.0,
    };
    if !held {
        return;
    }
    let kind = match (slot.level, r.level) {
        (None, Some(_)) => EventKind::Raised,
        (Some(_), Some(_)) => EventKind::Level,
        _ => EventKind::Cleared,
    };
    // A higher level wants a new acknowledgement; a cleared alarm is over.
    let higher = kind == EventKind::Level && r.level > slot.level;
    slot.level = r.level;
    slot.pending = None;
    if kind != EventKind::Cleared {
        slot.value = r.value.unwrap_or(f64::NAN);
    }
    let rec = slot.rec_mut();
    if kind == EventKind::Cleared || higher {
        rec.acknowledged = false;
        rec.operator = None;
    }
    if kind != EventKind::Cleared {
        rec.threshold = r.threshold;
    }
    rec.seq += 1;
    rec.at_ms = at_ms;
    out.push(event(rule, sensors, slot, kind, at_ms));
}

/// A sensor's slots, made the first time it is heard: its rules grouped by kind (limits
/// by field first, then boundaries, then silence), so the walk runs through long stretches
/// of one kind and its branches are predicted.
fn slots_for<'a>(
    sensors: &'a mut BySensor<SensorSlots>,
    selections: &mut HashMap<Vec<u32>, Arc<Selection>>,
    rules: &RuleSet,
    compiled: &[Compiled],
    sensor: u16,
) -> &'a mut SensorSlots {
    sensors.entry(sensor).or_insert_with(|| {
        let mut ids: Vec<u32> = rules
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.sensors.matches(sensor) && !matches!(r.check, Check::Separation { .. })
            })
            .map(|(i, _)| i as u32)
            .collect();
        ids.sort_by_key(|i| {
            let group = match compiled[*i as usize] {
                Compiled::Limit { field, .. } => field as u8,
                Compiled::Area { impact, .. } => 10 + u8::from(impact),
                Compiled::Stale => 20,
                Compiled::Separation => 30,
            };
            (group, *i)
        });
        let selection = selections
            .entry(ids.clone())
            .or_insert_with(|| {
                let limits = ids
                    .iter()
                    .map_while(|i| match compiled[*i as usize] {
                        Compiled::Limit {
                            field,
                            below,
                            above,
                        } => Some((field as usize, below, above)),
                        _ => None,
                    })
                    .collect();
                Arc::new(Selection {
                    ids: ids.clone(),
                    limits,
                })
            })
            .clone();
        SensorSlots {
            settled: vec![0; ids.len()],
            slots: ids.iter().map(|i| Slot::new(*i as usize)).collect(),
            selection,
            last_ms: i64::MIN,
        }
    })
}

fn cell_of(p: [f64; 3], size: f64) -> [i64; 3] {
    [
        (p[0] / size).floor() as i64,
        (p[1] / size).floor() as i64,
        (p[2] / size).floor() as i64,
    ]
}

impl Evaluator {
    pub fn new(rules: Arc<RuleSet>) -> Evaluator {
        let separation_rules = rules
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.check, Check::Separation { .. }))
            .map(|(i, _)| i)
            .collect();
        Evaluator {
            compiled: rules.rules.iter().map(compile).collect(),
            rules,
            sensors: BySensor::default(),
            selections: HashMap::new(),
            separations: HashMap::new(),
            separation_rules,
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    fn slots_for(&mut self, sensor: u16) -> &mut SensorSlots {
        slots_for(
            &mut self.sensors,
            &mut self.selections,
            &self.rules,
            &self.compiled,
            sensor,
        )
    }

    /// One sample, in stream order; transitions appended to `out`.
    pub fn sample(&mut self, s: &Sample, out: &mut Vec<AlarmEvent>) {
        let rules = &self.rules;
        // The impact point, once, if any rule needs it.
        let mut impact: Option<Option<Geodetic>> = None;
        let sensors = [s.sensor];
        let entry = slots_for(
            &mut self.sensors,
            &mut self.selections,
            rules,
            &self.compiled,
            s.sensor,
        );
        entry.last_ms = entry.last_ms.max(s.at_ms);
        let selection = entry.selection.clone();
        // The limits: the sample's values by field (NaN: the record has none).
        let values = [
            s.position.map_or(f64::NAN, |p| p.alt_m),
            s.speed_mps,
            s.velocity.map_or(f64::NAN, |v| v[2]),
        ];
        for (k, (field, below, above)) in selection.limits.iter().enumerate() {
            let v = values[*field];
            // Most samples of most limits: clear and settled clear. Find that out without
            // a branch per threshold; the reading only when it matters.
            let code = limit_code(v, below, above);
            if code == entry.settled[k] || v.is_nan() {
                if code != 0 {
                    entry.slots[k].value = v;
                }
                continue;
            }
            let slot = &mut entry.slots[k];
            let i = selection.ids[k] as usize;
            observe(
                &rules.rules[i],
                &sensors,
                slot,
                level_of_flat(v, below, above),
                s.at_ms,
                out,
            );
            entry.settled[k] = settled_code(slot);
        }
        for (k, &i) in selection
            .ids
            .iter()
            .enumerate()
            .skip(selection.limits.len())
        {
            let i = i as usize;
            let reading = match self.compiled[i] {
                Compiled::Limit { .. } => continue,
                Compiled::Area {
                    impact: is_impact,
                    keep_inside,
                    level,
                } => {
                    let (Check::Geofence { polygon, .. } | Check::Impact { polygon, .. }) =
                        &rules.rules[i].check
                    else {
                        continue;
                    };
                    let point = if is_impact {
                        *impact.get_or_insert_with(|| match (s.position, s.velocity) {
                            (Some(p), Some(v)) => impact_point(p, v, rules.ground_alt_m),
                            _ => None,
                        })
                    } else {
                        s.position
                    };
                    let Some(p) = point else { continue };
                    if polygon.contains(p.lat_deg, p.lon_deg) == keep_inside {
                        Reading::CLEAR
                    } else {
                        Reading {
                            level: Some(level),
                            value: None,
                            threshold: None,
                        }
                    }
                }
                // Heard: not silent.
                Compiled::Stale => Reading::CLEAR,
                Compiled::Separation => continue,
            };
            // Settled at the level read: nothing changes but the value shown.
            if level_code(reading.level) == entry.settled[k] {
                if let (Some(_), Some(v)) = (reading.level, reading.value) {
                    entry.slots[k].value = v;
                }
                continue;
            }
            let slot = &mut entry.slots[k];
            observe(&rules.rules[i], &sensors, slot, reading, s.at_ms, out);
            entry.settled[k] = settled_code(slot);
        }
        if !self.separation_rules.is_empty() {
            self.separate(s, out);
        }
    }

    fn separate(&mut self, s: &Sample, out: &mut Vec<AlarmEvent>) {
        let rules = &self.rules;
        for &i in &self.separation_rules {
            let rule = &rules.rules[i];
            let Check::Separation { below } = &rule.check else {
                continue;
            };
            if !rule.sensors.matches(s.sensor) {
                continue;
            }
            let Some(p) = s.ecef else { continue };
            // Cells four times the largest distance: whatever is near enough is in the
            // point's cell, or on an axis where the point is within that distance of a
            // face, the neighbour behind it (3.4 cells on average, not 27).
            let reach = below.iter().flatten().fold(1.0f64, |a, b| a.max(*b));
            let size = 4.0 * reach;
            let st = self.separations.entry(i).or_default();
            // Move this sensor's grid entry (most samples: the same cell, updated in place).
            let cell = cell_of(p, size);
            let me = (s.sensor, p, s.at_ms);
            match st.cell_of.insert(s.sensor, cell) {
                Some(was) if was == cell => {
                    if let Some(e) = st
                        .cells
                        .get_mut(&cell)
                        .and_then(|v| v.iter_mut().find(|e| e.0 == s.sensor))
                    {
                        *e = me;
                    }
                }
                was => {
                    if let Some(v) = was.and_then(|w| st.cells.get_mut(&w)) {
                        v.retain(|e| e.0 != s.sensor);
                    }
                    st.cells.entry(cell).or_default().push(me);
                }
            }
            // Everything within the largest distance is in these cells.
            let mut near = std::mem::take(&mut st.scratch);
            near.clear();
            let side = |axis: usize| -> &'static [i64] {
                let within = p[axis] - cell[axis] as f64 * size;
                if within < reach {
                    &[0, -1]
                } else if within > size - reach {
                    &[0, 1]
                } else {
                    &[0]
                }
            };
            let (sx, sy, sz) = (side(0), side(1), side(2));
            for &dx in sx {
                for &dy in sy {
                    for &dz in sz {
                        if let Some(v) = st.cells.get(&[cell[0] + dx, cell[1] + dy, cell[2] + dz]) {
                            near.extend(v.iter().filter(|e| e.0 != s.sensor));
                        }
                    }
                }
            }
            // This sensor's partners (pairs with a slot), taken out while they change.
            let mut mine = st.partners.remove(&s.sensor).unwrap_or_default();
            let mut gone = std::mem::take(&mut st.gone);
            gone.clear();
            // Pairs with a slot whose partner is not near any more: clear for them.
            gone.extend(mine.iter().filter(|o| !near.iter().any(|e| e.0 == **o)));
            let measured = near
                .iter()
                .map(|&(o, q, at)| {
                    let d = (s.at_ms - at <= FRESH_MS).then(|| {
                        ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2))
                            .sqrt()
                    });
                    (o, d)
                })
                .chain(gone.iter().map(|o| (*o, None)));
            for (other, distance) in measured {
                let reading = match distance {
                    Some(d) => level_of(d, below, &[None; 3]),
                    None => Reading::CLEAR,
                };
                let paired = mine.contains(&other);
                if reading.level.is_none() && !paired {
                    continue;
                }
                let key = (s.sensor.min(other), s.sensor.max(other));
                let slot = st.pairs.entry(key).or_insert_with(|| Slot::new(i));
                observe(rule, &[key.0, key.1], slot, reading, s.at_ms, out);
                // A pair that never had a transition has nothing to remember: forget it. One
                // that had keeps its sequence, or a later transition would reuse a message
                // id the stream has already seen.
                let forget =
                    slot.level.is_none() && slot.pending.is_none() && slot.record.is_none();
                if forget {
                    st.pairs.remove(&key);
                    mine.retain(|x| *x != other);
                    if let Some(v) = st.partners.get_mut(&other) {
                        v.retain(|x| *x != s.sensor);
                    }
                } else if !paired {
                    mine.push(other);
                    let theirs = st.partners.entry(other).or_default();
                    if !theirs.contains(&s.sensor) {
                        theirs.push(s.sensor);
                    }
                }
            }
            if !mine.is_empty() {
                st.partners.insert(s.sensor, mine);
            }
            st.gone = gone;
            st.scratch = near;
        }
    }

    /// The clock moved on (receive-clock time, ms): silent sensors go stale, shelving
    /// runs out.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<AlarmEvent>) {
        let rules = self.rules.clone();
        for (sensor, entry) in &mut self.sensors {
            let sensors = [*sensor];
            for (k, slot) in entry.slots.iter_mut().enumerate() {
                let rule = &rules.rules[slot.rule as usize];
                if let Check::Stale { after_ms, level } = &rule.check {
                    let silent = now_ms - entry.last_ms;
                    if entry.last_ms != i64::MIN && silent > *after_ms {
                        let r = Reading {
                            level: Some(*level),
                            value: Some(silent as f64 / 1000.0),
                            threshold: Some(*after_ms as f64 / 1000.0),
                        };
                        observe(rule, &sensors, slot, r, now_ms, out);
                        entry.settled[k] = settled_code(slot);
                    }
                }
                unshelve_if_due(rule, &sensors, slot, now_ms, out);
            }
        }
        for (i, st) in &mut self.separations {
            let rule = &rules.rules[*i];
            for ((a, b), slot) in &mut st.pairs {
                unshelve_if_due(rule, &[*a, *b], slot, now_ms, out);
            }
        }
    }

    /// The sensors and slot of alarm `id` (`<rule>/<sensor>` or `<rule>/<a>-<b>`).
    fn find(&mut self, id: &str) -> Option<(Vec<u16>, &mut Slot)> {
        let (name, key) = id.rsplit_once('/')?;
        let i = self.rules.rules.iter().position(|r| r.name == name)?;
        if let Some((a, b)) = key.split_once('-') {
            let key = (a.parse().ok()?, b.parse().ok()?);
            let slot = self.separations.get_mut(&i)?.pairs.get_mut(&key)?;
            return Some((vec![key.0, key.1], slot));
        }
        let sensor: u16 = key.parse().ok()?;
        let slot = self
            .sensors
            .get_mut(&sensor)?
            .slots
            .iter_mut()
            .find(|s| s.rule as usize == i)?;
        Some((vec![sensor], slot))
    }

    /// An operator acknowledges an active alarm.
    pub fn acknowledge(
        &mut self,
        id: &str,
        operator: &str,
        at_ms: i64,
    ) -> Result<AlarmEvent, String> {
        let rules = self.rules.clone();
        let (sensors, slot) = self.find(id).ok_or_else(|| format!("no alarm {id:?}"))?;
        if slot.level.is_none() {
            return Err(format!("alarm {id:?} is not active"));
        }
        let rule = rule_of(&rules, id).ok_or_else(|| format!("no alarm {id:?}"))?;
        let rec = slot.rec_mut();
        rec.acknowledged = true;
        rec.operator = Some(operator.to_owned());
        rec.seq += 1;
        Ok(event(rule, &sensors, slot, EventKind::Acknowledged, at_ms))
    }

    /// An operator shelves an alarm until `until_ms` (`None`: unshelves it).
    pub fn shelve(
        &mut self,
        id: &str,
        operator: &str,
        until_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<AlarmEvent, String> {
        let rules = self.rules.clone();
        let (sensors, slot) = self.find(id).ok_or_else(|| format!("no alarm {id:?}"))?;
        let rule = rule_of(&rules, id).ok_or_else(|| format!("no alarm {id:?}"))?;
        let rec = slot.rec_mut();
        rec.shelved_until_ms = until_ms;
        rec.operator = Some(operator.to_owned());
        rec.seq += 1;
        let kind = if until_ms.is_some() {
            EventKind::Shelved
        } else {
            EventKind::Unshelved
        };
        Ok(event(rule, &sensors, slot, kind, at_ms))
    }

    /// Take back a state from the bus (the last transition of each alarm, at start).
    pub fn restore(&mut self, e: &AlarmEvent) {
        let Some(i) = self.rules.rules.iter().position(|r| r.name == e.rule) else {
            return;
        };
        let slot = match e.sensors.as_slice() {
            [a] => {
                let entry = self.slots_for(*a);
                entry.last_ms = entry.last_ms.max(e.at_ms);
                let Some(k) = entry.slots.iter().position(|s| s.rule as usize == i) else {
                    return;
                };
                // Settled at the level it had (a restored state holds, pending nothing).
                entry.settled[k] = level_code(e.level);
                &mut entry.slots[k]
            }
            [a, b] => {
                let st = self.separations.entry(i).or_default();
                for (x, y) in [(*a, *b), (*b, *a)] {
                    let v = st.partners.entry(x).or_default();
                    if !v.contains(&y) {
                        v.push(y);
                    }
                }
                st.pairs.entry((*a, *b)).or_insert_with(|| Slot::new(i))
            }
            _ => return,
        };
        slot.level = e.level;
        slot.value = e.value.unwrap_or(f64::NAN);
        let rec = slot.rec_mut();
        rec.acknowledged = e.acknowledged;
        rec.operator = e.operator.clone();
        rec.shelved_until_ms = e.shelved_until_ms;
        rec.seq = rec.seq.max(e.seq);
        rec.threshold = e.threshold;
        rec.at_ms = e.at_ms;
    }

    /// Every alarm that is active or shelved, as its latest state.
    pub fn active(&self) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        for (sensor, entry) in &self.sensors {
            for slot in &entry.slots {
                if slot.level.is_some() || slot.rec().shelved_until_ms.is_some() {
                    let kind = if slot.level.is_some() {
                        EventKind::Raised
                    } else {
                        EventKind::Cleared
                    };
                    out.push(event(
                        &self.rules.rules[slot.rule as usize],
                        &[*sensor],
                        slot,
                        kind,
                        slot.rec().at_ms,
                    ));
                }
            }
        }
        for (i, st) in &self.separations {
            for ((a, b), slot) in &st.pairs {
                if slot.level.is_some() || slot.rec().shelved_until_ms.is_some() {
                    let kind = if slot.level.is_some() {
                        EventKind::Raised
                    } else {
                        EventKind::Cleared
                    };
                    out.push(event(
                        &self.rules.rules[*i],
                        &[*a, *b],
                        slot,
                        kind,
                        slot.rec().at_ms,
                    ));
                }
            }
        }
        out.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| a.id.cmp(&b.id)));
        out
    }
}

fn unshelve_if_due(
    rule: &Rule,
    sensors: &[u16],
    slot: &mut Slot,
    now_ms: i64,
    out: &mut Vec<AlarmEvent>,
) {
    if slot.rec().shelved_until_ms.is_some_and(|u| now_ms >= u) {
        let rec = slot.rec_mut();
        rec.shelved_until_ms = None;
        rec.seq += 1;
        out.push(event(rule, sensors, slot, EventKind::Unshelved, now_ms));
    }
}

fn rule_of<'a>(rules: &'a RuleSet, id: &str) -> Option<&'a Rule> {
    let (name, _) = id.rsplit_once('/')?;
    rules.rules.iter().find(|r| r.name == name)
}

/// The kind of rule an alarm comes from (for callers that only have the rule set).
pub fn kind_of(rules: &RuleSet, name: &str) -> Option<RuleKind> {
    rules.rules.iter().find(|r| r.name == name).map(Rule::kind)
}
