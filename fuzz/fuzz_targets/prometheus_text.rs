//! The Prometheus text exposition parser behind metric probes
//! (`crates/monitor/src/probe/exposition.rs`).
//!
//! The module is compiled here from its own source file rather than through `windlass-monitor`,
//! whose dependency tree (the store, the pipeline, sqlx, the edge) would multiply the
//! instrumented build for one self-contained parser. It is the same code: the file depends on
//! nothing but `thiserror`.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/monitor/src/probe/exposition.rs"]
mod exposition;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(samples) = exposition::parse(text) {
        for sample in &samples {
            let _ = sample.label("le");
        }
    }
});
