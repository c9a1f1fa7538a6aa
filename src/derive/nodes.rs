//! Argo node bookkeeping the bridge must reproduce: `status.compressedNodes`, node ids and pod
//! names (Argo stores no pod name: it is derived, and the rule changed in Argo 3.4).

use crate::source::objects::Node;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::Read;

/// Largest decompressed node map accepted. Argo compresses nodes once the Workflow exceeds
/// `MAX_WORKFLOW_SIZE` (1 MiB by default); JSON node maps compress ~10–20×, so 64 MiB leaves
/// ample room while stopping a decompression bomb.
const MAX_NODES_JSON: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error("compressedNodes is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error(
        "compressedNodes uses {0}, which this build does not decode (Argo >= 4.1 WORKFLOW_COMPRESSION_ALGORITHM); only gzip, Argo's default, is supported"
    )]
    Unsupported(&'static str),
    #[error("compressedNodes is not valid gzip: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("compressedNodes expands beyond {MAX_NODES_JSON} bytes")]
    TooLarge,
    #[error("compressedNodes does not hold a node map: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes `status.compressedNodes`: base64 of the compressed JSON node map. Argo's
/// `DecompressContent` tells the algorithm by magic bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, else
/// brotli.
pub fn decompress(encoded: &str) -> Result<BTreeMap<String, Node>, NodesError> {
    let compressed = base64::engine::general_purpose::STANDARD.decode(encoded.trim())?;
    match compressed.get(..4) {
        Some([0x1f, 0x8b, ..]) => {}
        Some([0x28, 0xb5, 0x2f, 0xfd]) => return Err(NodesError::Unsupported("zstd")),
        _ => return Err(NodesError::Unsupported("brotli or an unknown format")),
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .take(MAX_NODES_JSON + 1)
        .read_to_end(&mut json)
        .map_err(NodesError::Gzip)?;
    if json.len() as u64 > MAX_NODES_JSON {
        return Err(NodesError::TooLarge);
    }
    Ok(serde_json::from_slice(&json)?)
}

/// 32-bit FNV-1a, the hash Argo uses for node ids and pod names.
pub fn fnv32a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// Argo's `Workflow.NodeID`: the workflow name for the root node, else `<workflow>-<fnv32a(name)>`.
pub fn node_id(workflow: &str, node_name: &str) -> String {
    if node_name == workflow {
        workflow.to_owned()
    } else {
        format!("{workflow}-{}", fnv32a(node_name))
    }
}

/// Argo's pod name for a Pod node. Format `v1` (Argo < 3.4, or the workflow annotation
/// `workflows.argoproj.io/pod-name-format: v1`) is the node id; `v2` is
/// `<workflow>-<template>-<hash>` with the prefix cut to fit Kubernetes' 253-character limit.
pub fn pod_name(workflow: &str, node: &Node, format_v1: bool) -> String {
    if format_v1 {
        return node.id.clone();
    }
    if node.name == workflow {
        return workflow.to_owned();
    }
    // The last segment of the id is fnv32a(node name); KFP's RetrievePodName reuses it the same way.
    let hash = node
        .id
        .rsplit('-')
        .next()
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    let hash = hash.unwrap_or_else(|| fnv32a(&node.name).to_string());
    let mut prefix = format!("{workflow}-{}", node.template());
    // 253 (max name) - 10 (hash) - 1 (dash), as Argo's GeneratePodName.
    if prefix.len() > 242 {
        let mut cut = 242;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    format!("{prefix}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv32a(""), 0x811c9dc5);
        assert_eq!(fnv32a("a"), 0xe40c292c);
        assert_eq!(fnv32a("foobar"), 0xbf9cf968);
    }

    #[test]
    fn node_ids_follow_argo() {
        assert_eq!(node_id("wf", "wf"), "wf");
        assert_eq!(node_id("wf", "a"), format!("wf-{}", 0xe40c292c_u32));
    }

    #[test]
    fn pod_names_v1_and_v2() {
        let node = Node {
            id: "tutorial-d7bcd-2065044012".into(),
            name: "tutorial-d7bcd.root-driver".into(),
            template_name: "system-dag-driver".into(),
            ..Node::default()
        };
        assert_eq!(
            pod_name("tutorial-d7bcd", &node, true),
            "tutorial-d7bcd-2065044012"
        );
        assert_eq!(
            pod_name("tutorial-d7bcd", &node, false),
            "tutorial-d7bcd-system-dag-driver-2065044012"
        );
        let long = Node {
            template_name: "t".repeat(300),
            ..node
        };
        assert_eq!(pod_name("tutorial-d7bcd", &long, false).len(), 253);
    }

    #[test]
    fn decompresses_gzip_and_names_the_others() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"wf":{"id":"wf","name":"wf","type":"DAG","phase":"Running"}}"#)
            .expect("gzip");
        let encoded = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
        let nodes = decompress(&encoded).expect("decodes");
        assert_eq!(nodes["wf"].node_type, "DAG");
        let zstd = base64::engine::general_purpose::STANDARD.encode([0x28, 0xb5, 0x2f, 0xfd, 0]);
        assert!(
            decompress(&zstd)
                .expect_err("zstd")
                .to_string()
                .contains("zstd")
        );
        assert!(matches!(decompress("%%%"), Err(NodesError::Base64(_))));
    }
}
