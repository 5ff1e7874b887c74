//! The partitioned dispatch engine.
