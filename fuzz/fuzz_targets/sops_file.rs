//! SOPS files (`crates/secrets/src/sops.rs`): the dotenv, YAML and JSON readers, the metadata,
//! the data key's armor and age envelope, and the per-value AES-GCM fields, with a fixed
//! identity. The first byte picks the format; the rest is the file.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use windlass_secrets::age::Identity;
use windlass_secrets::sops::{Document, Format};

/// The identity of the seed files (and of the C2SP CCTV age vectors): a test key, public.
const IDENTITY: &str = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0";

static IDENTITIES: LazyLock<Vec<Identity>> =
    LazyLock::new(|| vec![Identity::parse(IDENTITY).expect("the fuzz identity parses")]);

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let format = match selector % 3 {
        0 => Format::Dotenv,
        1 => Format::Yaml,
        _ => Format::Json,
    };
    if let Ok(mut document) = Document::decrypt(text, format, &IDENTITIES, "fuzz.enc") {
        // What decrypts must encrypt again (what `secrets set` does next).
        let _ = document.encrypt();
    }
});
