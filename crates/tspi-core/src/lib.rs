//! Pure TSPI logic: bytes in, types out.
//!
//! This crate is the single source of truth for the BAPS TSPI v4 datagram (SPEC §2), the
//! record published on the bus (SPEC §3), subject and `Nats-Msg-Id` mapping and the
//! display-unit conversions. It deliberately performs no I/O and pulls in no runtime, so
//! every rule here is testable in microseconds and reusable by any program.

pub mod alarm;
mod cbor;
pub mod command;
pub mod datagram;
pub mod display;
pub mod geo;
pub mod json;
pub mod ops;
pub mod playout;
pub mod record;
pub mod rfc3339;
pub mod subject;
pub mod tag;
pub mod units;
pub mod validity;

pub use command::{CommandError, DisplayCommand, DisplaySetting};
pub use datagram::{
    decode, Datagram, DatagramError, GeocentricRaw, MessageKind, Payload, SphericalRaw,
    DATAGRAM_LEN, TICKS_PER_DAY, TICKS_PER_SECOND, VERSION,
};
pub use record::{
    GeocentricPayload, RecordError, RecordPayload, SphericalPayload, TelemetryRecord,
};
pub use subject::{msg_id, StreamPrefix, SubjectError};
pub use tag::{Tag, TagError, TagStatus};
pub use validity::StatusFlags;
