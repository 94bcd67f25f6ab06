//! Stored identifiers: 16 lowercase hex digits in a JSON string, for map keys as for
//! values. Owned here so the API may show ids otherwise without moving the format.

use std::fmt;

use hoist_types::{NodeId, ServiceId, TaskId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! id_record {
    ($(#[$doc:meta])* $name:ident <=> $domain:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                parse_hex_id(&text).map($name).map_err(serde::de::Error::custom)
            }
        }

        impl From<$domain> for $name {
            fn from(id: $domain) -> Self {
                $name(id.0)
            }
        }

        impl From<$name> for $domain {
            fn from(id: $name) -> Self {
                $domain(id.0)
            }
        }
    };
}

fn parse_hex_id(text: &str) -> Result<u64, String> {
    if text.len() != 16 {
        return Err(format!("{text:?} is not a 16-digit hex id"));
    }
    u64::from_str_radix(text, 16).map_err(|_| format!("{text:?} is not a 16-digit hex id"))
}

id_record!(
    /// A node's id as stored.
    NodeIdRecord <=> NodeId
);
id_record!(
    /// A service's id as stored.
    ServiceIdRecord <=> ServiceId
);
id_record!(
    /// A task's id as stored.
    TaskIdRecord <=> TaskId
);
