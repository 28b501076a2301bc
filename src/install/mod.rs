//! The install engine: a plan of steps per host, run over [`crate::remote::Remote`].
//!
//! 1. **Connect** to every host (read-only: identity, architecture, sudo, tools). Any
//!    failure stops the install before a single host is changed.
//! 2. **Agent**: put the airlock binary itself on each host under the data root.
//! 3. **Blobs**: send each host the blobs it lacks (rootfs layers everywhere, container
//!    images to registry hosts), verified by SHA-256 on arrival, resumable.
//! 4. **Unpack** the rootfs on each host (`airlock agent unpack`).
//! 5. **Registry**: start airlock's registry on the registry hosts over the blobs
//!    already there (a systemd unit where systemd runs, a detached process otherwise),
//!    with TLS and basic auth by default ([`registry_node`]); with an external registry,
//!    push the image set there instead ([`external`]).
//! 6. **Mirrors**: on every host, `/etc/hosts` names the registry and containerd's
//!    `hosts.toml` sends every registry domain of the image to it, with its CA and
//!    credentials: nothing renamed.
//! 7. **Init/Join**: the runtime's init script on the first master, then its join
//!    script on every other host, one at a time.
//! 8. **Launch**: run the image's `CMDS` on the first master, in the rootfs, then each
//!    launched app (`LAUNCH`, or the Clusterfile's `Application`) by its type or its
//!    `APPCMDS`, with its `APPENV` (`apps.rs`).
//!
//! Each step runs within a time limit and steps safe to repeat are retried
//! ([`limits`]); hosts are worked on at most `--max-parallel` at once. Progress is a
//! stream of typed [`Event`]s, the first of which is the plan.
//!
//! Every step of every host leaves a marker on the host holding a fingerprint of its
//! inputs; a re-run skips steps whose marker matches, so a failed install resumes at
//! the failed step and a finished one re-run changes nothing.

mod apps;
pub mod connect;
mod engine;
mod event;
pub mod external;
pub mod journal;
pub mod limits;
mod plan;
pub mod registry_node;
pub mod render;
pub mod runtime;
mod tracked;

pub(crate) use engine::write_file;
pub use engine::{ImagePlan, Install, InstallError, Phase, StepId};
pub use event::{Event, Finish, PlannedStep, Reporter, StepState};
pub use registry_node::{RegistryAccess, hosts_toml, mirror_domains};
