//! The display settings in force: what the display commands (SPEC §3) have set so far.

use tspi_core::units::UnitSystem;
use tspi_core::{DisplayCommand, DisplaySetting};

/// Units, marker colour and session metadata as the last commands set them.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplaySettings {
    pub units: UnitSystem,
    pub marker_color: Option<String>,
    /// Session metadata: (name, id).
    pub session: Option<(String, String)>,
}

impl Default for DisplaySettings {
    fn default() -> Self {
        DisplaySettings {
            units: UnitSystem::Metric,
            marker_color: None,
            session: None,
        }
    }
}

impl DisplaySettings {
    /// Apply a command; true when it changed something.
    pub fn apply(&mut self, setting: &DisplaySetting) -> bool {
        let before = self.clone();
        match setting {
            DisplaySetting::Units(u) => self.units = *u,
            DisplaySetting::MarkerColor(c) => self.marker_color = Some(c.clone()),
            DisplaySetting::SessionMetadata { name, id } => {
                self.session = Some((name.clone(), id.clone()))
            }
        }
        *self != before
    }

    /// The settings that a sequence of commands (oldest first) leaves in force.
    pub fn from_commands<'a>(commands: impl IntoIterator<Item = &'a DisplayCommand>) -> Self {
        let mut s = DisplaySettings::default();
        for c in commands {
            s.apply(&c.setting);
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cmd(setting: DisplaySetting) -> DisplayCommand {
        DisplayCommand::new(
            "id".into(),
            "2025-09-28T11:00:00Z".into(),
            "t".into(),
            setting,
        )
        .unwrap()
    }

    #[test]
    fn later_commands_win_and_unchanged_is_reported() {
        let mut s = DisplaySettings::default();
        assert!(s.apply(&DisplaySetting::Units(UnitSystem::Imperial)));
        assert!(!s.apply(&DisplaySetting::Units(UnitSystem::Imperial)));
        assert!(s.apply(&DisplaySetting::MarkerColor("red".into())));
        let all = [
            cmd(DisplaySetting::Units(UnitSystem::Imperial)),
            cmd(DisplaySetting::MarkerColor("red".into())),
            cmd(DisplaySetting::SessionMetadata {
                name: "Sortie".into(),
                id: "7".into(),
            }),
            cmd(DisplaySetting::Units(UnitSystem::Metric)),
        ];
        let s = DisplaySettings::from_commands(&all);
        assert_eq!(s.units, UnitSystem::Metric);
        assert_eq!(s.marker_color.as_deref(), Some("red"));
        assert_eq!(s.session, Some(("Sortie".into(), "7".into())));
    }
}
