//! What a TSPI display shows, as pure state: no sockets, no clock, no tasks.
//!
//! The headless player and every tab of the web display run the same [`Session`]: the
//! display commands in force, the tags to show, which feed to follow (the livestream, a
//! group replay, a private replay), and the time cursor. Their I/O loops feed it decoded
//! messages and requests with the wall time and carry out the [`Effect`]s it returns.
//! [`placement`] turns records into positions; [`thinning`] caps updates per track.

pub mod cursor;
pub mod placement;
pub mod session;
pub mod settings;
pub mod tags;
pub mod thinning;

pub use cursor::Cursor;
pub use placement::{Placement, TrackFix};
pub use session::{
    Clock, Content, Counts, Effect, Feed, FeedSpec, Input, Mode, Replayed, Request, Session,
    SessionConfig, SnapshotSpec, Start,
};
pub use settings::DisplaySettings;
pub use thinning::RateGate;
