//! JSON: the result schema of `harness::result` with per-run samples (documented, versioned,
//! in `docs/results.md`).

use harness::ResultFile;

use super::Exporter;

/// Pretty-printed JSON of the whole result file.
#[derive(Debug)]
pub(crate) struct JsonExporter;

impl Exporter for JsonExporter {
    fn serialize(&self, results: &ResultFile, _baseline: Option<&str>) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(results).expect("results serialize");
        bytes.push(b'\n');
        bytes
    }
}
