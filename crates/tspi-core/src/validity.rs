//! The nine validity bits carried in `status | (status_flags << 8)` (SPEC §2).

use serde::{Deserialize, Serialize};

/// Which of the nine kinematic components the sensor marks as valid. Serialised with the
/// exact field names of SPEC §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusFlags {
    pub position_x_valid: bool,
    pub position_y_valid: bool,
    pub position_z_valid: bool,
    pub velocity_x_valid: bool,
    pub velocity_y_valid: bool,
    pub velocity_z_valid: bool,
    pub acceleration_x_valid: bool,
    pub acceleration_y_valid: bool,
    pub acceleration_z_valid: bool,
}

impl StatusFlags {
    /// Build from the header bytes: bit i of the combined word is component i.
    pub fn from_status(status: u8, status_flags: u16) -> Self {
        let combined = u32::from(status) | (u32::from(status_flags) << 8);
        Self::from_bits(combined)
    }

    /// Build from the combined word; bits above 8 are ignored.
    pub fn from_bits(combined: u32) -> Self {
        let bit = |i: u32| combined & (1 << i) != 0;
        StatusFlags {
            position_x_valid: bit(0),
            position_y_valid: bit(1),
            position_z_valid: bit(2),
            velocity_x_valid: bit(3),
            velocity_y_valid: bit(4),
            velocity_z_valid: bit(5),
            acceleration_x_valid: bit(6),
            acceleration_y_valid: bit(7),
            acceleration_z_valid: bit(8),
        }
    }

    /// The nine bits as the low bits of a combined word.
    pub fn bits(&self) -> u32 {
        [
            self.position_x_valid,
            self.position_y_valid,
            self.position_z_valid,
            self.velocity_x_valid,
            self.velocity_y_valid,
            self.velocity_z_valid,
            self.acceleration_x_valid,
            self.acceleration_y_valid,
            self.acceleration_z_valid,
        ]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &v)| acc | (u32::from(v) << i))
    }

    /// All nine components valid: what a healthy tracker reports.
    pub const ALL_VALID: StatusFlags = StatusFlags {
        position_x_valid: true,
        position_y_valid: true,
        position_z_valid: true,
        velocity_x_valid: true,
        velocity_y_valid: true,
        velocity_z_valid: true,
        acceleration_x_valid: true,
        acceleration_y_valid: true,
        acceleration_z_valid: true,
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        for combined in 0..512u32 {
            assert_eq!(StatusFlags::from_bits(combined).bits(), combined);
        }
    }

    #[test]
    fn flag_byte_supplies_bit_eight_only() {
        let f = StatusFlags::from_status(0, 0xFFFF);
        assert_eq!(f.bits(), 1 << 8);
        assert_eq!(StatusFlags::from_status(0xFF, 1), StatusFlags::ALL_VALID);
    }
}
