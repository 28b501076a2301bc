//! The install engine: a plan of steps per host, run over [`crate::remote`].
