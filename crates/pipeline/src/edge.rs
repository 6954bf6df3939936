//! How the pipeline moves traffic: through the edge's admin API. The contract (the
//! [`EdgeControl`] trait, its HTTP client and the wire types) belongs to the edge crate
//! (`windlass_edge::client`, `windlass_edge::admin::api`); this module only names it where the
//! pipeline's callers have always found it. It must not grow a second copy of those types.

pub use windlass_edge::admin::api::{EdgeEvent, EdgeState, InstanceState, PoolState, ServiceState};
pub use windlass_edge::client::{AdminTls, EdgeClient, EdgeControl, EdgeError};
