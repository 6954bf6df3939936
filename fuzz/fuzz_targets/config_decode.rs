//! `windlass.toml`: the TOML parser, the decoder into the typed model, the checks behind
//! `windlass validate`, and the rendering of every diagnostic (spans to `line:column`, the
//! underlined line), on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use windlass_config::Source;

fuzz_target!(|data: &[u8]| {
    // A config that is not UTF-8 is refused before parsing (`Source::read`).
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A directory that does not exist: the checks that look at files find nothing.
    let source = Source::new("/nonexistent-fuzz-dir/windlass.toml", text);
    let parsed = windlass_config::parse(&source);
    for diagnostic in &parsed.diagnostics {
        let _ = diagnostic.render();
        let _ = diagnostic.to_json();
    }
});
