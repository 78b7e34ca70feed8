//! The detached process that owns a running mesh (`ambientctl local
//! supervise`, started by `up`).
//!
//! istiod runs in the topology's fabric namespace, bound to the bridge
//! address [`ISTIOD_IP`](super::layout::ISTIOD_IP) that every node reaches over its `eth0`; nothing of
//! the mesh listens in the host's namespace. Start-up order: namespaces,
//! generated config, istiod (until `/ready`, and its view of the config
//! has no errors), one ztunnel per node (until `/healthz/ready`), pod
//! enrolment, then the pods' containers. Afterwards it restarts what
//! exits (per policy), re-enrols pods after a ztunnel restart, re-syncs
//! the generated config from the user's directory every second and keeps
//! `status.json` current. On SIGTERM (from `down`) it stops and reaps its
//! processes and exits; `down` removes everything else, from `state.json`
//! and the namespace prefix (and also copes when this process was killed).

mod launch;
mod mesh;
mod probe;
mod status;

use std::process::ExitCode;

use super::error::Error;
use super::layout::Layout;
use super::lock::StateLock;
use super::owned::{self, Kind};
use super::record::{self, Phase, ProcRef, Status};
use crate::cli::UpArgs;
use crate::output;

pub(crate) fn supervise(args: &UpArgs) -> Result<ExitCode, Error> {
    let layout = Layout::new(&args.state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Spawn { what: "the supervisor's runtime".into(), source })?;
    runtime.block_on(run(args, layout))
}

async fn run(args: &UpArgs, layout: Layout) -> Result<ExitCode, Error> {
    // Held (through stdin) until this process exits: no second `up` on
    // this state directory meanwhile.
    let _lock = StateLock::inherited(&layout)?;
    let me = i32::try_from(std::process::id()).unwrap_or_default();
    record::update(&layout.record(), |record| record.supervisor = ProcRef::of(me))?;
    for file in [layout.status(), layout.status().with_extension("json.tmp")] {
        owned::claim(&layout, &file, Kind::File)?;
    }
    let status = Status {
        supervisor_pid: me,
        config_dir: args.config.clone(),
        logs: layout.logs(),
        ..Status::default()
    };
    record::save(&layout.status(), &status)?;
    match mesh::Mesh::bring_up(args, &layout, status.clone()).await {
        Ok(mut mesh) => {
            output::error("mesh ready");
            mesh.run().await
        }
        Err(e) => {
            output::error(format_args!("start-up failed: {e}"));
            let failed = Status { phase: Phase::Failed, error: Some(e.to_string()), ..status };
            record::save(&layout.status(), &failed)?;
            Ok(ExitCode::FAILURE)
        }
    }
}
