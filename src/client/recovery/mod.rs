//! Recovery of room messages across a reconnect and across messages the server dropped: the
//! stream position of each joined room (see [`streams`]).

// Wired into the Router in the next steps.
#[allow(dead_code)]
mod streams;

pub use streams::Position;
