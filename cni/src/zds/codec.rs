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
        return Err(ZdsError::Malformed("ancillary data cut short"));
    }
    if got.len == 0 && got.fds.is_empty() {
        return Err(ZdsError::Closed);
    }
    buf.truncate(got.len);
    Ok(Packet { bytes: buf, fds: got.fds })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn requests_round_trip() {
        let info =
            WorkloadInfo { name: "p".into(), namespace: "ns".into(), service_account: "sa".into() };
        for req in [
            Request::Add { uid: "u".into(), info },
            Request::Keep { uid: "u".into() },
            Request::Del { uid: "u".into() },
            Request::SnapshotSent,
        ] {
            assert_eq!(Request::decode(&req.encode()).unwrap(), req);
        }
    }

    #[test]
    fn del_uses_field_two_as_upstream() {
        // DelWorkload.uid is field 2 (1 is reserved): payload field 2,
        // length 3, then field 2 of DelWorkload, length 1, "u".
        let bytes = Request::Del { uid: "u".into() }.encode();
        assert_eq!(bytes, [0x12, 0x03, 0x12, 0x01, b'u']);
    }

    #[test]
    fn add_without_workload_info_decodes_with_empty_info() {
        let bytes = pb::WorkloadRequest {
            payload: Some(pb::workload_request::Payload::Add(pb::AddWorkload {
                uid: "u".into(),
                workload_info: None,
            })),
        }
        .encode_to_vec();
        assert_eq!(
            Request::decode(&bytes).unwrap(),
            Request::Add { uid: "u".into(), info: WorkloadInfo::default() }
        );
    }

    #[test]
    fn request_without_payload_is_rejected() {
        let err = Request::decode(&[]).unwrap_err();
        assert!(matches!(err, ZdsError::Malformed(m) if m.contains("without a payload")));
    }

    #[test]
    fn request_without_uid_is_rejected() {
        for req in [
            Request::Add { uid: String::new(), info: WorkloadInfo::default() },
            Request::Keep { uid: String::new() },
            Request::Del { uid: String::new() },
        ] {
            let err = Request::decode(&req.encode()).unwrap_err();
            assert!(matches!(err, ZdsError::Malformed(m) if m.contains("without a uid")), "{err}");
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(Request::decode(&[0xff, 0xff, 0xff]), Err(ZdsError::Decode(_))));
        assert!(matches!(decode_hello(&[0xff]), Err(ZdsError::Decode(_))));
        assert!(matches!(decode_ack(&[0xff]), Err(ZdsError::Decode(_))));
    }

    #[test]
    fn hello_must_be_v1() {
        decode_hello(&encode_hello()).unwrap();
        let v0 = pb::ZdsHello { version: 0 }.encode_to_vec();
        assert!(matches!(decode_hello(&v0), Err(ZdsError::Version(0))));
        let v7 = pb::ZdsHello { version: 7 }.encode_to_vec();
        assert!(matches!(decode_hello(&v7), Err(ZdsError::Version(7))));
    }

    #[test]
    fn acks_round_trip_and_an_empty_error_is_never_sent() {
        assert_eq!(decode_ack(&encode_ack(&Ok(()))).unwrap(), Ok(()));
        assert_eq!(decode_ack(&encode_ack(&Err("no".into()))).unwrap(), Err("no".into()));
        assert_eq!(
            decode_ack(&encode_ack(&Err(String::new()))).unwrap(),
            Err("unspecified error".into())
        );
    }

    #[test]
    fn response_without_ack_is_rejected() {
        let bytes = pb::WorkloadResponse { payload: None }.encode_to_vec();
        assert!(matches!(decode_ack(&bytes), Err(ZdsError::Malformed(_))));
    }
}
