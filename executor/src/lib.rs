//! CUDA executor for specreplay.
//!
//! This crate is an empty shell for now: a later issue fills it with a cudarc-based
//! executor that reuses `specreplay_sim`'s scheduler, proposer and record types and
//! replaces only what the GPU computes (input preparation, metadata, rejection
//! sampling, the model forward pass).

/// Re-export of the simulator the executor builds on.
pub use specreplay_sim as sim;
