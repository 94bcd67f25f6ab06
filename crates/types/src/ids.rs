//! Identifiers of nodes, services and tasks.
//!
//! A node id is also the node's Raft id, so it is a `u64`; all ids print as 16 lowercase
//! hex digits, which is what the CLI shows and what JSON carries (a string, so scripts in
//! languages without 64-bit integers read it intact).

use std::fmt;
use std::str::FromStr;

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// A fresh random id. Collisions among 2^64 values are not a practical concern
            /// for clusters of thousands of objects.
            pub fn random() -> Self {
                loop {
                    let value: u64 = rand::random();
                    if value != 0 {
                        return $name(value);
                    }
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                if text.len() != 16 {
                    return Err(format!("{text:?} is not a 16-digit hex id"));
                }
                u64::from_str_radix(text, 16)
                    .map($name)
                    .map_err(|_| format!("{text:?} is not a 16-digit hex id"))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A node's identity, the CN of its certificate and its Raft id.
    NodeId
);
hex_id!(
    /// A service's identity; names can be reused after removal, ids never are.
    ServiceId
);
hex_id!(
    /// One task: one attempt at running one slot of a service on one node.
    TaskId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_json() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<NodeId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"00abcdef01234567\"");
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        assert!("xyz".parse::<NodeId>().is_err());
        assert!("zzzzzzzzzzzzzzzz".parse::<NodeId>().is_err());
    }
}
