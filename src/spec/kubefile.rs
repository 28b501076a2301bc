//! The Kubefile: sealer's build instructions for a cluster image.
