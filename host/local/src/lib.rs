//! The embedded local runtime (work in progress).
