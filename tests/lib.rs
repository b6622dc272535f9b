//! Shared helpers for the workspace tests live in the test binaries; this library is empty on purpose.
