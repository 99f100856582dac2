//! Client side (in progress).
