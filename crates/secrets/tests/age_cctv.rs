//! Our age implementation against the C2SP CCTV age test vectors (tests/data/age-cctv/, see
//! ORIGIN.md there). Every vector whose features we implement (X25519 identities, the header and
//! its MAC, the STREAM payload, the ASCII armor) must give exactly the expected result; the others
//! (scrypt passphrases, post-quantum hybrid identities) are skipped and counted, and the counts
//! are asserted so that the test cannot silently skip everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use windlass_secrets::age::{self, DecryptFailure, Identity};

/// How many vectors there are, how many we run, and why the others are skipped. Update these
/// together with the vectors.
const TOTAL: usize = 143;
const SUPPORTED: usize = 98;
const SKIPPED_SCRYPT: usize = 26;
const SKIPPED_POST_QUANTUM: usize = 19;

struct Vector {
    name: String,
    expect: String,
    payload_sha256: Option<String>,
    identities: Vec<String>,
    passphrase: bool,
    armored: bool,
    body: Vec<u8>,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/age-cctv")
}

fn read_vector(path: &Path) -> Vector {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(path).unwrap();
    let split = bytes.windows(2).position(|w| w == b"\n\n").unwrap_or_else(|| panic!("{name}: no blank line"));
    let head = std::str::from_utf8(&bytes[..split]).unwrap_or_else(|_| panic!("{name}: header is not UTF-8"));
    let mut body = bytes[split + 2..].to_vec();
    let mut vector = Vector {
        name: name.clone(),
        expect: String::new(),
        payload_sha256: None,
        identities: Vec::new(),
        passphrase: false,
        armored: false,
        body: Vec::new(),
    };
    for line in head.lines() {
        let (key, value) = line.split_once(": ").unwrap_or_else(|| panic!("{name}: bad header line {line:?}"));
        match key {
            "expect" => vector.expect = value.to_owned(),
            "payload" => vector.payload_sha256 = Some(value.to_owned()),
            "identity" => vector.identities.push(value.to_owned()),
            "passphrase" => vector.passphrase = true,
            "armored" => vector.armored = value == "yes",
            "compressed" => {
                assert_eq!(value, "zlib", "{name}: unknown compression");
                body = miniz_oxide::inflate::decompress_to_vec_zlib(&body)
                    .unwrap_or_else(|e| panic!("{name}: bad zlib data: {e:?}"));
            }
            "file key" | "comment" => {}
            // The vectors' README: files with unknown keys are to be ignored. None has one
            // today; fail so that a new key is looked at rather than silently skipped.
            other => panic!("{name}: unknown header key {other:?}"),
        }
    }
    vector.body = body;
    vector
}

/// Why a vector is not run, or `None` if we support everything it uses.
fn unsupported(vector: &Vector) -> Option<&'static str> {
    if vector.passphrase {
        return Some("scrypt passphrase");
    }
    if vector.identities.iter().any(|i| i.starts_with("AGE-SECRET-KEY-PQ-")) {
        return Some("post-quantum (ML-KEM-768 + X25519) identity");
    }
    None
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Runs one supported vector; `Err` says how it went wrong.
fn check(vector: &Vector) -> Result<(), String> {
    let identities: Vec<Identity> = vector
        .identities
        .iter()
        .map(|i| Identity::parse(i).map_err(|e| format!("the vector's identity does not parse: {e}")))
        .collect::<Result<_, _>>()?;
    // Two vectors (`empty`, `armor_empty`) have no identity: they fail before one is needed.
    let binary = if vector.armored {
        let dearmored = std::str::from_utf8(&vector.body)
            .map_err(|_| age::AgeFormatError::from("not UTF-8"))
            .and_then(age::dearmor);
        match (dearmored, vector.expect.as_str()) {
            (Err(_), "armor failure") => return Ok(()),
            (Ok(_), "armor failure") => return Err("the armor was accepted".into()),
            (Err(why), _) => return Err(format!("the armor was refused: {why}")),
            (Ok(binary), _) => binary,
        }
    } else {
        vector.body.clone()
    };
    let result = age::decrypt(&binary, &identities);
    match (vector.expect.as_str(), result) {
        ("success", Ok(plain)) => {
            let want = vector.payload_sha256.as_deref().ok_or("a success vector without a payload hash")?;
            let got = sha256_hex(&plain);
            if got == want { Ok(()) } else { Err(format!("decrypted to sha256 {got}, expected {want}")) }
        }
        ("no match", Err(DecryptFailure::NoMatch)) => Ok(()),
        // We release no plaintext on any failure (decryption is all or nothing), so there is no
        // partial payload to compare with the vector's hash.
        ("header failure" | "HMAC failure" | "payload failure", Err(DecryptFailure::Corrupt(_))) => Ok(()),
        (expect, Ok(plain)) => Err(format!("decrypted ({} bytes) but expected {expect}", plain.len())),
        (expect, Err(failure)) => Err(format!("failed with {failure:?} but expected {expect}")),
    }
}

#[test]
fn every_supported_cctv_vector_passes() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.ends_with(".md") && !name.starts_with('.')
        })
        .collect();
    paths.sort();

    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for path in &paths {
        let vector = read_vector(path);
        if let Some(why) = unsupported(&vector) {
            *skipped.entry(why).or_default() += 1;
            continue;
        }
        *ran.entry(vector.expect.clone()).or_default() += 1;
        if let Err(why) = check(&vector) {
            failures.push(format!("{} (expect: {}): {why}", vector.name, vector.expect));
        }
    }

    let supported: usize = ran.values().sum();
    println!("age CCTV vectors: {} in all, {supported} run, {} skipped", paths.len(), paths.len() - supported);
    for (expect, n) in &ran {
        println!("  ran {n:3} expecting {expect}");
    }
    for (why, n) in &skipped {
        println!("  skipped {n:3}: {why}");
    }
    assert!(failures.is_empty(), "{} vector(s) failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(paths.len(), TOTAL, "the number of vectors changed: update the counts in this test");
    assert_eq!(supported, SUPPORTED, "supported vectors run");
    assert_eq!(skipped.get("scrypt passphrase").copied().unwrap_or(0), SKIPPED_SCRYPT);
    assert_eq!(skipped.get("post-quantum (ML-KEM-768 + X25519) identity").copied().unwrap_or(0), SKIPPED_POST_QUANTUM);
    // Each outcome class is exercised, so a regression in any of them shows.
    for expect in ["success", "no match", "header failure", "HMAC failure", "payload failure", "armor failure"] {
        assert!(ran.get(expect).copied().unwrap_or(0) > 0, "no supported vector expects {expect}");
    }
}
