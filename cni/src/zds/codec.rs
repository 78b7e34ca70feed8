//! ZDS messages on the wire: one protobuf message per SEQPACKET packet.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use mesh_netns::fdpass;
use mesh_proto::workload::zds as pb;
use prost::Message as _;

use super::ZdsError;

/// Packets larger than this are rejected (ZDS messages are a few hundred
/// bytes at most).
pub const MAX_PACKET: usize = 16 * 1024;

/// Who a pod is, as the agent tells the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
}

impl From<pb::WorkloadInfo> for WorkloadInfo {
    fn from(w: pb::WorkloadInfo) -> Self {
        Self { name: w.name, namespace: w.namespace, service_account: w.service_account }
    }
}

impl From<WorkloadInfo> for pb::WorkloadInfo {
    fn from(w: WorkloadInfo) -> Self {
        Self { name: w.name, namespace: w.namespace, service_account: w.service_account }
    }
}

/// A request from the agent, decoded and checked (the netns fd of an Add
/// travels beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Add { uid: String, info: WorkloadInfo },
    Keep { uid: String },
    Del { uid: String },
    SnapshotSent,
}

fn non_empty(uid: String, what: &'static str) -> Result<String, ZdsError> {
    if uid.is_empty() { Err(ZdsError::Malformed(what)) } else { Ok(uid) }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        use pb::workload_request::Payload;
        let payload = match self.clone() {
            Self::Add { uid, info } => {
                Payload::Add(pb::AddWorkload { uid, workload_info: Some(info.into()) })
            }
            Self::Keep { uid } => Payload::Keep(pb::KeepWorkload { uid }),
            Self::Del { uid } => Payload::Del(pb::DelWorkload { uid }),
            Self::SnapshotSent => Payload::SnapshotSent(pb::SnapshotSent {}),
        };
        pb::WorkloadRequest { payload: Some(payload) }.encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ZdsError> {
        use pb::workload_request::Payload;
        let req = pb::WorkloadRequest::decode(bytes).map_err(ZdsError::Decode)?;
        match req.payload {
            Some(Payload::Add(add)) => Ok(Self::Add {
                uid: non_empty(add.uid, "AddWorkload without a uid")?,
                info: add.workload_info.map(WorkloadInfo::from).unwrap_or_default(),
            }),
            Some(Payload::Keep(keep)) => {
                Ok(Self::Keep { uid: non_empty(keep.uid, "KeepWorkload without a uid")? })
            }
            Some(Payload::Del(del)) => {
                Ok(Self::Del { uid: non_empty(del.uid, "DelWorkload without a uid")? })
            }
            Some(Payload::SnapshotSent(_)) => Ok(Self::SnapshotSent),
            None => Err(ZdsError::Malformed("WorkloadRequest without a payload")),
        }
    }

    /// The name of the request, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add",
            Self::Keep { .. } => "keep",
            Self::Del { .. } => "del",
            Self::SnapshotSent => "snapshot-sent",
        }
    }
}

pub fn encode_hello() -> Vec<u8> {
    pb::ZdsHello { version: pb::Version::V1.into() }.encode_to_vec()
}

/// Accepts only version V1.
pub fn decode_hello(bytes: &[u8]) -> Result<(), ZdsError> {
    let hello = pb::ZdsHello::decode(bytes).map_err(ZdsError::Decode)?;
    if hello.version == i32::from(pb::Version::V1) {
        Ok(())
    } else {
        Err(ZdsError::Version(hello.version))
    }
}

/// An Ack: an empty error string means success.
pub fn encode_ack(result: &Result<(), String>) -> Vec<u8> {
    let error = match result {
        Ok(()) => String::new(),
        Err(e) if e.is_empty() => "unspecified error".to_owned(),
        Err(e) => e.clone(),
    };
    pb::WorkloadResponse { payload: Some(pb::workload_response::Payload::Ack(pb::Ack { error })) }
        .encode_to_vec()
}

/// The Ack inside a response: `Ok(Err(text))` when the proxy refused.
pub fn decode_ack(bytes: &[u8]) -> Result<Result<(), String>, ZdsError> {
    let resp = pb::WorkloadResponse::decode(bytes).map_err(ZdsError::Decode)?;
    match resp.payload {
        Some(pb::workload_response::Payload::Ack(ack)) if ack.error.is_empty() => Ok(Ok(())),
        Some(pb::workload_response::Payload::Ack(ack)) => Ok(Err(ack.error)),
        None => Err(ZdsError::Malformed("WorkloadResponse without an Ack")),
    }
}

/// One received packet and the descriptors that came with it.
#[derive(Debug)]
pub struct Packet {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Sends one packet.
pub fn send_packet(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    fdpass::send_with_fds(sock, bytes, fds)
}

/// Receives one packet. A packet over [`MAX_PACKET`] bytes is an error
/// (the kernel drops the rest of it; the connection stays usable); a
/// closed peer is [`ZdsError::Closed`].
pub fn recv_packet<F: AsFd>(sock: &F) -> Result<Packet, ZdsError> {
    let mut buf = vec![0u8; MAX_PACKET];
    let got = fdpass::recv_with_fds(sock.as_fd(), &mut buf).map_err(ZdsError::Io)?;
    if got.truncated {
        return Err(ZdsError::TooLarge { limit: MAX_PACKET });
    }
    if got.fds_truncated {
        return Err(ZdsError::Malformed("too many file descriptors"));
    }
    if got.len == 0 && got.fds.is_empty() {
        return Err(ZdsError::Closed);
    }
    buf.truncate(got.len);
    Ok(Packet { bytes: buf, fds: got.fds })
}
