//! Server side (in progress).
