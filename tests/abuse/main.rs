//! The abuse suite (issue 14): a real node attacked the way one tenant, or anyone on the
//! network, would attack it, bounded in time. Each attack asserts that the node refuses or
//! sheds it (naming the limit) and that a healthy tenant's requests keep being answered.
//!
//! - [`net`]: the connection level (slow clients, connection floods, oversized and malformed
//!   HTTP/1.1 and HTTP/2, rapid reset).
//! - [`tenant`]: what a tenant's own code and deploys can do (deploy floods, a flood of
//!   output, every limit tripped at once).

#[path = "../support/mod.rs"]
mod support;

mod net;
mod tenant;
