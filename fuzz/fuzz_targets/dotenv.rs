//! `.env` files (`crates/config/src/dotenv.rs`): the parser and the rendering of its diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use windlass_config::Source;
use windlass_config::dotenv::EnvFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, diagnostics) = EnvFile::parse(Source::new(".env.fuzz", text));
    for entry in &file.entries {
        // Every span the parser hands out must point into the text, on character boundaries
        // (diagnostics and `validate` slice the text with them).
        assert!(text.get(entry.key_span.clone()).is_some(), "key span {:?} out of the text", entry.key_span);
        assert!(text.get(entry.value_span.clone()).is_some(), "value span {:?} out of the text", entry.value_span);
        assert_eq!(&text[entry.key_span.clone()], entry.key);
    }
    for diagnostic in &diagnostics {
        let _ = diagnostic.render();
        let _ = diagnostic.to_json();
    }
});
