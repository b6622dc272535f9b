//! The alert API.
