//! age decryption (`crates/secrets/src/age.rs`) with a fixed identity on arbitrary bytes: the
//! header parser, the stanza rules, the MAC, the STREAM payload; and the ASCII armor reader on
//! the same bytes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use windlass_secrets::age::{self, Identity};

/// The identity of the C2SP CCTV age vectors (the seed corpus): a test key, public.
const IDENTITY: &str = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0";

static IDENTITIES: LazyLock<Vec<Identity>> =
    LazyLock::new(|| vec![Identity::parse(IDENTITY).expect("the fuzz identity parses")]);

fuzz_target!(|data: &[u8]| {
    let _ = age::decrypt(data, &IDENTITIES);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(binary) = age::dearmor(text) {
            // Strict armor is canonical: what it accepts re-armors to the same block.
            assert_eq!(
                age::dearmor(&age::armor(&binary)).as_deref(),
                Ok(binary.as_slice()),
                "armor does not round-trip"
            );
            let _ = age::decrypt(&binary, &IDENTITIES);
        }
    }
});
