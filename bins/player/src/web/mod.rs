//! The web display (issue 10).
