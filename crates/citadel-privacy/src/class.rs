//! Data classes, from least to most sensitive.

use serde::{Deserialize, Serialize};

/// How sensitive data is. Ordered: `Public < Internal < Confidential <
/// Restricted`, so the class of a text is the highest class found in it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    /// May be published.
    #[default]
    Public,
    /// For the organisation's own people.
    Internal,
    /// Personal data and business secrets: need to know.
    Confidential,
    /// Credentials, payment and national identifiers: the strictest handling.
    Restricted,
}

impl DataClass {
    /// Every class, least sensitive first.
    pub const ALL: [DataClass; 4] = [
        DataClass::Public,
        DataClass::Internal,
        DataClass::Confidential,
        DataClass::Restricted,
    ];

    /// Wire name, as in policies and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Confidential => "confidential",
            Self::Restricted => "restricted",
        }
    }
}

impl std::fmt::Display for DataClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DataClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!("unknown data class `{s}` (public, internal, confidential, restricted)")
            })
    }
}
