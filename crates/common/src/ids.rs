//! Id newtypes. A rank is not an expert is not a layer: the compiler keeps them apart.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$m:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }

        impl $name {
            pub fn get(self) -> $inner {
                self.0
            }
        }
    };
}

id_newtype!(
    /// A worker's position in the cluster layout (0-based).
    Rank(u32),
    "rank"
);
id_newtype!(
    /// A routed expert's index inside one MoE layer.
    ExpertId(u32),
    "expert"
);
id_newtype!(
    /// A decoder layer's index (0-based).
    LayerId(u32),
    "layer"
);
id_newtype!(
    /// The placement epoch: bumped every time the placement changes.
    Epoch(u64),
    "epoch"
);

impl Epoch {
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl LayerId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl ExpertId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
