//! Plugin ADDs waiting for their verdict.

use tokio::time::Instant;

use super::{Actor, Enrolment, PodState};
use crate::report::{PluginReply, SandboxReport};

impl Actor {
    pub(super) fn answer_waiters(&mut self) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for waiter in waiters {
            match self.verdict(&waiter.report, now >= waiter.deadline) {
                Some(reply) => {
                    tracing::info!(pod = %format!("{}/{}", waiter.report.namespace, waiter.report.name), ?reply, "answering the cni plugin");
                    let _ = waiter.reply.send(reply);
                }
                None if waiter.reply.is_closed() => {}
                None => self.waiters.push(waiter),
            }
        }
    }

    /// The answer to a plugin ADD, or `None` to keep it waiting.
    fn verdict(&self, report: &SandboxReport, expired: bool) -> Option<PluginReply> {
        let entry = self.pods.values().find(|e| {
            e.pod.namespace == report.namespace
                && e.pod.name == report.name
                && report.uid.as_ref().is_none_or(|u| *u == e.pod.uid)
        });
        let decided = entry.map(|e| (e, self.effective(e).0));
        match decided {
            Some((e, pod)) if self.synced || e.state != PodState::Outside => {
                if self.decide(&pod) != Enrolment::Enrolled {
                    return Some(PluginReply::NotMesh);
                }
                let this_sandbox = e.netns.as_ref().map(|(p, _)| p) == report.netns.as_ref();
                if e.state == PodState::Enrolled && this_sandbox {
                    return Some(PluginReply::Enrolled);
                }
                expired.then(|| PluginReply::Failed {
                    message: e.error.clone().unwrap_or_else(|| {
                        format!("pod {} not enrolled in time ({:?})", pod.key(), e.state)
                    }),
                })
            }
            _ => expired.then(|| PluginReply::Failed {
                message: format!(
                    "pod {}/{} is not known to the node agent",
                    report.namespace, report.name
                ),
            }),
        }
    }
}
