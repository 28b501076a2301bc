//! The plan of a run: every host x step the engine may do, in the order it does them,
//! sent as [`Event::Plan`](super::Event::Plan) before the first step starts.
//!
//! 1. Every host: `plugin-pre-init-host` (when a plugin applies), prepare, blobs,
//!    unpack, `plugin-post-init-host`; registry on registry hosts; mirrors.
//! 2. `plugin-pre-install`, `plugin-pre-scaleup` on hosts being added, init on the
//!    first master (when the runtime has an init script), join on the others (masters
//!    first), `plugin-post-scaleup`.
//! 3. Launch on the first master, then `plugin-post-install`.
//!
//! A step whose marker matches is reported as skipped, so the plan lists it too.

use super::engine::{Install, Phase, StepId};
use super::event::PlannedStep;
use super::runtime::{Runtime, RuntimeAction};

impl Install {
    /// Every host x step this install may run, in order.
    pub fn planned_steps(&self) -> Vec<PlannedStep> {
        let mut plan = Vec::new();
        let hosts = &self.spec.hosts;
        let first = self.spec.first_master().ip;
        let each = |plan: &mut Vec<PlannedStep>,
                    step: StepId,
                    pick: &dyn Fn(&crate::spec::clusterfile::Host) -> bool| {
            for h in hosts.iter().filter(|h| pick(h)) {
                plan.push(PlannedStep { host: h.ip, step });
            }
        };
        let plugin = |phase: Phase| {
            move |h: &crate::spec::clusterfile::Host| !self.plugins_for(h, phase).is_empty()
        };
        for h in hosts {
            if !self.plugins_for(h, Phase::PreInitHost).is_empty() {
                plan.push(PlannedStep {
                    host: h.ip,
                    step: StepId::Plugin(Phase::PreInitHost),
                });
            }
            plan.push(PlannedStep {
                host: h.ip,
                step: StepId::Prepare,
            });
        }
        for h in hosts {
            for step in [StepId::Blobs, StepId::Unpack] {
                plan.push(PlannedStep { host: h.ip, step });
            }
            if !self.plugins_for(h, Phase::PostInitHost).is_empty() {
                plan.push(PlannedStep {
                    host: h.ip,
                    step: StepId::Plugin(Phase::PostInitHost),
                });
            }
        }
        each(&mut plan, StepId::Registry, &|h| self.is_registry_host(h));
        each(&mut plan, StepId::Mirrors, &|_| true);
        each(
            &mut plan,
            StepId::Plugin(Phase::PreInstall),
            &plugin(Phase::PreInstall),
        );
        let scaling = |phase: Phase| {
            move |h: &crate::spec::clusterfile::Host| {
                self.scale_up.contains(&h.ip) && plugin(phase)(h)
            }
        };
        each(
            &mut plan,
            StepId::Plugin(Phase::PreScaleup),
            &scaling(Phase::PreScaleup),
        );
        let runtime: &dyn Runtime = self.plan.runtime.as_ref();
        let first_host = self.spec.first_master();
        if runtime
            .host_command(RuntimeAction::Init, first_host, "", &[])
            .is_some()
        {
            plan.push(PlannedStep {
                host: first,
                step: StepId::Init,
            });
        }
        let mut joiners: Vec<_> = hosts
            .iter()
            .filter(|h| h.ip != first)
            .filter(|h| {
                runtime
                    .host_command(RuntimeAction::Join, h, "", &[])
                    .is_some()
            })
            .collect();
        joiners.sort_by_key(|h| !h.is_master());
        plan.extend(joiners.into_iter().map(|h| PlannedStep {
            host: h.ip,
            step: StepId::Join,
        }));
        if runtime.after_joins("", &[]).is_some() {
            plan.push(PlannedStep {
                host: first,
                step: StepId::Ready,
            });
        }
        each(
            &mut plan,
            StepId::Plugin(Phase::PostScaleup),
            &scaling(Phase::PostScaleup),
        );
        plan.push(PlannedStep {
            host: first,
            step: StepId::Launch,
        });
        each(
            &mut plan,
            StepId::Plugin(Phase::PostInstall),
            &plugin(Phase::PostInstall),
        );
        plan
    }
}
