//! Guards wire compatibility with upstream Istio and Envoy.
//!
//! `upstream-wire-facts.tsv` lists every field, enum value and RPC of
//! upstream's Address, Authorization, CreateCertificate, delta xDS and ZDS
//! schemas. This test derives the same facts from our compiled descriptor set
//! and compares them by field path from each resource root, so nested message
//! names may differ but numbers, scalar types, enum values and the names that
//! appear in type URLs and gRPC paths may not.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a broken assumption is the failure report"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

const ROOTS: &[&str] = &[
    "istio.workload.Address",
    "istio.security.Authorization",
    "istio.v1.auth.IstioCertificateRequest",
    "istio.v1.auth.IstioCertificateResponse",
    "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    "envoy.service.discovery.v3.DiscoveryRequest",
    "envoy.service.discovery.v3.DiscoveryResponse",
    "istio.workload.zds.WorkloadRequest",
    "istio.workload.zds.WorkloadResponse",
    "istio.workload.zds.ZdsHello",
];

#[derive(Debug, Default)]
struct Schema {
    /// message -> field name -> (number, type name)
    fields: HashMap<String, BTreeMap<String, (i32, String)>>,
    /// enum -> value name -> number
    enums: HashMap<String, BTreeMap<String, i32>>,
    /// (service, method) -> (input, output, streaming)
    rpcs: BTreeMap<(String, String), (String, String, bool)>,
}

fn load_upstream() -> Schema {
    let text = include_str!("upstream-wire-facts.tsv");
    let mut schema = Schema::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        match cols[0] {
            "field" => {
                let number: i32 = cols[3].parse().unwrap();
                schema
                    .fields
                    .entry(cols[1].to_owned())
                    .or_default()
                    .insert(cols[2].to_owned(), (number, cols[4].to_owned()));
            }
            "enum" => {
                schema
                    .enums
                    .entry(cols[1].to_owned())
                    .or_default()
                    .insert(cols[2].to_owned(), cols[3].parse().unwrap());
            }
            "rpc" => {
                schema.rpcs.insert(
                    (cols[1].to_owned(), cols[2].to_owned()),
                    (cols[3].to_owned(), cols[4].to_owned(), cols[5] == "stream"),
                );
            }
            other => panic!("unknown fact kind {other:?}"),
        }
    }
    schema
}

fn scalar_name(ty: Type) -> &'static str {
    match ty {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group | Type::Message | Type::Enum => "",
    }
}

fn walk_message(schema: &mut Schema, package: &str, msg: &DescriptorProto, prefix: &str) {
    let name = format!("{prefix}{}", msg.name());
    let full = format!("{package}.{name}");
    let fields = schema.fields.entry(full.clone()).or_default();
    for field in &msg.field {
        let ty = if field.type_name().is_empty() {
            scalar_name(field.r#type()).to_owned()
        } else {
            field.type_name().trim_start_matches('.').to_owned()
        };
        fields.insert(field.name().to_owned(), (field.number(), ty));
    }
    for e in &msg.enum_type {
        let values = e.value.iter().map(|v| (v.name().to_owned(), v.number())).collect();
        schema.enums.insert(format!("{full}.{}", e.name()), values);
    }
    for nested in &msg.nested_type {
        walk_message(schema, package, nested, &format!("{name}."));
    }
}

fn load_ours() -> Schema {
    let set = FileDescriptorSet::decode(mesh_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut schema = Schema::default();
    for file in &set.file {
        let package = file.package();
        for msg in &file.message_type {
            walk_message(&mut schema, package, msg, "");
        }
        for e in &file.enum_type {
            let values = e.value.iter().map(|v| (v.name().to_owned(), v.number())).collect();
            schema.enums.insert(format!("{package}.{}", e.name()), values);
        }
        for service in &file.service {
            for method in &service.method {
                schema.rpcs.insert(
                    (format!("{package}.{}", service.name()), method.name().to_owned()),
                    (
                        method.input_type().trim_start_matches('.').to_owned(),
                        method.output_type().trim_start_matches('.').to_owned(),
                        method.client_streaming() && method.server_streaming(),
                    ),
                );
            }
        }
    }
    schema
}

const SCALARS: &[&str] = &[
    "double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string", "bytes",
    "uint32", "sfixed32", "sfixed64", "sint32", "sint64",
];

/// Flattens a message tree into `path -> (number, kind)` facts.
fn shape(
    schema: &Schema,
    msg: &str,
    path: &str,
    seen: &BTreeSet<String>,
    out: &mut BTreeMap<String, (i32, String)>,
) {
    if seen.contains(msg) {
        return;
    }
    let mut seen = seen.clone();
    seen.insert(msg.to_owned());
    let Some(fields) = schema.fields.get(msg) else {
        return;
    };
    for (name, (number, ty)) in fields {
        let field_path = format!("{path}.{name}");
        if SCALARS.contains(&ty.as_str()) {
            out.insert(field_path, (*number, ty.clone()));
        } else if let Some(values) = schema.enums.get(ty) {
            out.insert(field_path.clone(), (*number, "enum".to_owned()));
            for (value, n) in values {
                out.insert(format!("{field_path}#{value}"), (*n, "enumvalue".to_owned()));
            }
        } else if ty.starts_with("google.protobuf.") {
            out.insert(field_path, (*number, ty.clone()));
        } else {
            let kind = if ty.ends_with("Entry") { "map" } else { "message" };
            out.insert(field_path.clone(), (*number, kind.to_owned()));
            shape(schema, ty, &field_path, &seen, out);
        }
    }
}

#[test]
fn every_upstream_field_has_the_same_number_and_type_in_ours() {
    let upstream = load_upstream();
    let ours = load_ours();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for root in ROOTS {
        let (mut want, mut have) = (BTreeMap::new(), BTreeMap::new());
        shape(&upstream, root, root, &BTreeSet::new(), &mut want);
        assert!(!want.is_empty(), "upstream facts lack root {root}");
        assert!(ours.fields.contains_key(*root), "our schema lacks message {root}");
        shape(&ours, root, root, &BTreeSet::new(), &mut have);
        for (path, expected) in &want {
            checked += 1;
            match have.get(path) {
                None => mismatches.push(format!("missing {path} (upstream {expected:?})")),
                Some(actual) if actual != expected => mismatches
                    .push(format!("differs {path}: ours {actual:?}, upstream {expected:?}")),
                Some(_) => {}
            }
        }
    }
    assert!(checked > 250, "only {checked} facts checked; the fact table looks truncated");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} facts differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn every_upstream_rpc_exists_with_the_same_messages() {
    let upstream = load_upstream();
    let ours = load_ours();
    assert_eq!(upstream.rpcs.len(), 3);
    for (key, expected) in &upstream.rpcs {
        assert_eq!(ours.rpcs.get(key), Some(expected), "rpc {}/{}", key.0, key.1);
    }
}

#[test]
fn type_urls_name_existing_messages() {
    let ours = load_ours();
    for url in [
        mesh_proto::type_url::ADDRESS,
        mesh_proto::type_url::AUTHORIZATION,
        mesh_proto::type_url::WAYPOINT_SERVICE,
        mesh_proto::type_url::L7_AUTHORIZATION,
    ] {
        let name = url.strip_prefix("type.googleapis.com/").unwrap();
        assert!(ours.fields.contains_key(name), "{url} names no message");
    }
}

/// The checker itself must be able to fail: a renumbered field is caught.
#[test]
fn a_renumbered_field_is_reported() {
    let upstream = load_upstream();
    let mut ours = load_ours();
    ours.fields
        .get_mut("istio.workload.Workload")
        .unwrap()
        .insert("uid".to_owned(), (99, "string".to_owned()));
    let (mut want, mut have) = (BTreeMap::new(), BTreeMap::new());
    shape(
        &upstream,
        "istio.workload.Address",
        "istio.workload.Address",
        &BTreeSet::new(),
        &mut want,
    );
    shape(&ours, "istio.workload.Address", "istio.workload.Address", &BTreeSet::new(), &mut have);
    let key = "istio.workload.Address.workload.uid";
    assert_eq!(want.get(key), Some(&(20, "string".to_owned())));
    assert_ne!(want.get(key), have.get(key));
}

/// Bytes encoded from our types decode with the field numbers upstream uses.
#[test]
fn encoded_workload_uses_upstream_field_numbers() {
    use mesh_proto::workload::{Address, Workload, address};
    let addr = Address {
        r#type: Some(address::Type::Workload(Workload { uid: "u".into(), ..Default::default() })),
    };
    let bytes = addr.encode_to_vec();
    // Address.workload = field 1, length-delimited; Workload.uid = field 20, string.
    assert_eq!(bytes, vec![0x0a, 0x04, 0xa2, 0x01, 0x01, b'u']);
}
