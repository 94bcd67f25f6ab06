//! Which driver runs a service's tasks: the `driver` field of a spec.
//!
//! Only the kinds Hoist ships exist; an unknown name is refused when it is read (from a
//! flag or from JSON) with the message validation gave before this was an enum. What a
//! node *offers* stays a list of names (`EngineInfo::drivers`): a node of a newer version
//! may offer a driver this one does not know, and its heartbeat must still be read.
//! Knows nothing of how a driver runs anything.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::InvalidSpec;

/// A driver a service can ask for. Serialized as its name, `process` or `docker`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum DriverKind {
    /// A process group on the node, sharing its network.
    #[default]
    Process,
    /// A container of the node's Docker Engine.
    Docker,
}

impl DriverKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [DriverKind; 2] = [DriverKind::Process, DriverKind::Docker];

    /// The name specs, flags and nodes' driver lists use.
    pub const fn as_str(self) -> &'static str {
        match self {
            DriverKind::Process => "process",
            DriverKind::Docker => "docker",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriverKind {
    type Err = InvalidSpec;

    fn from_str(text: &str) -> Result<Self, InvalidSpec> {
        DriverKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                InvalidSpec::new("driver", format!("{text:?}: expected process or docker"))
            })
    }
}

impl TryFrom<String> for DriverKind {
    type Error = InvalidSpec;

    fn try_from(text: String) -> Result<Self, InvalidSpec> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_and_write_their_names_and_unknown_ones_are_refused_by_name() {
        for kind in DriverKind::ALL {
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<DriverKind>(&json).ok(), Some(kind));
            assert_eq!(kind.as_str().parse::<DriverKind>(), Ok(kind));
        }
        let err = "wasm".parse::<DriverKind>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "invalid driver: \"wasm\": expected process or docker"
        );
        let err = serde_json::from_str::<DriverKind>("\"Docker\"").expect_err("case matters");
        assert!(
            err.to_string()
                .contains("invalid driver: \"Docker\": expected process or docker"),
            "{err}"
        );
    }
}
