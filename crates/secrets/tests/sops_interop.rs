//! SOPS files against the real `sops` binary, both directions, and the file backend's
//! guarantees (round trip, rotate, tamper detection, stable ciphertext of unchanged values).
//!
//! Needs `WINDLASS_TEST_SOPS` = the path of a real sops 3.x binary (run with
//! `SOPS_DISABLE_VERSION_CHECK=1`); `age-keygen` must be on PATH.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use windlass_secrets::age::{Identity, Recipient};
use windlass_secrets::sops::{Document, Format};
use windlass_secrets::{SecretValue, SecretsError};

/// A key made by the real `age-keygen`: (keys file, identity).
fn keygen(dir: &Path, name: &str) -> (PathBuf, Identity) {
    let path = dir.join(name);
    let status = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen must be on PATH (apt-get install age)");
    assert!(status.status.success(), "age-keygen failed: {}", String::from_utf8_lossy(&status.stderr));
    let text = std::fs::read_to_string(&path).unwrap();
    let identity = Identity::parse_file(&text).unwrap().remove(0);
    (path, identity)
}

fn sops(args: &[&str], key_file: &Path) -> std::process::Output {
    Command::new(windlass_testkit::tools::sops())
        .args(args)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", key_file)
        .output()
        .unwrap()
}

const PLAIN_ENV: &str = "DB_PASSWORD=correct horse battery staple\nAPI_KEY=ak_live_0123456789abcdef\nEMPTY=\n";

#[test]
fn sops_encrypts_windlass_decrypts_dotenv_yaml_json() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, identity) = keygen(dir.path(), "k.txt");
    let recipient = identity.recipient().encode();
    let cases = [
        ("a.env", PLAIN_ENV.to_owned(), Format::Dotenv),
        (
            "a.yaml",
            "DB_PASSWORD: correct horse battery staple\nAPI_KEY: ak_live_0123456789abcdef\nPORT: 5432\n".to_owned(),
            Format::Yaml,
        ),
        (
            "a.json",
            "{\"DB_PASSWORD\": \"correct horse battery staple\", \"API_KEY\": \"ak_live_0123456789abcdef\"}".to_owned(),
            Format::Json,
        ),
    ];
    for (name, plain, format) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, plain).unwrap();
        let out = sops(&["encrypt", "--age", &recipient, path.to_str().unwrap()], &key_file);
        assert!(out.status.success(), "sops encrypt {name}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let doc = Document::decrypt(&text, format, std::slice::from_ref(&identity), name).unwrap();
        assert_eq!(doc.get("DB_PASSWORD").unwrap().expose(), "correct horse battery staple", "{name}");
        assert_eq!(doc.get("API_KEY").unwrap().expose(), "ak_live_0123456789abcdef", "{name}");
        if format == Format::Yaml {
            assert_eq!(doc.get("PORT").unwrap().expose(), "5432");
        }
        // Change one value, write it back, and let sops read our file.
        let mut doc = doc;
        doc.set("API_KEY", SecretValue::new("ak_live_rotated_9876543210")).unwrap();
        let ours = doc.encrypt().unwrap();
        // The unchanged value keeps its ciphertext.
        let password_line = text.lines().find(|l| l.contains("DB_PASSWORD")).unwrap();
        assert!(ours.contains(password_line.trim()), "{name}: unchanged value was re-encrypted\n{ours}");
        let ours_path = dir.path().join(format!("ours.{name}"));
        std::fs::write(&ours_path, &ours).unwrap();
        let out = sops(&["decrypt", ours_path.to_str().unwrap()], &key_file);
        assert!(out.status.success(), "sops decrypt {name}: {}\n{ours}", String::from_utf8_lossy(&out.stderr));
        let decrypted = String::from_utf8(out.stdout).unwrap();
        assert!(decrypted.contains("ak_live_rotated_9876543210"), "{name}: {decrypted}");
        assert!(decrypted.contains("correct horse battery staple"), "{name}: {decrypted}");
    }
}

#[test]
fn windlass_encrypts_sops_decrypts_with_two_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let (key_a, a) = keygen(dir.path(), "a.txt");
    let (key_b, b) = keygen(dir.path(), "b.txt");
    for format in [Format::Dotenv, Format::Yaml, Format::Json] {
        let mut doc = Document::new(format, &[a.recipient(), b.recipient()]).unwrap();
        doc.set("DATABASE_URL", SecretValue::new("postgres://app:s3cret-pw@db/app")).unwrap();
        doc.set("MULTI", SecretValue::new("line one\nline two")).unwrap();
        doc.set("EMPTY", SecretValue::new("")).unwrap();
        let text = doc.encrypt().unwrap();
        assert!(!text.contains("s3cret-pw"));
        let path = dir.path().join(format!("w.{}", format.extension()));
        std::fs::write(&path, &text).unwrap();
        for key in [&key_a, &key_b] {
            let out = sops(&["decrypt", path.to_str().unwrap()], key);
            assert!(out.status.success(), "{format:?}: {}\n{text}", String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains("postgres://app:s3cret-pw@db/app"));
        }
        for id in [&a, &b] {
            let back = Document::decrypt(&text, format, std::slice::from_ref(id), "w").unwrap();
            assert_eq!(back.get("MULTI").unwrap().expose(), "line one\nline two");
            assert_eq!(back.get("EMPTY").unwrap().expose(), "");
        }
    }
}

#[test]
fn rotate_locks_out_a_removed_recipient_and_changes_every_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = keygen(dir.path(), "a.txt");
    let (_, b) = keygen(dir.path(), "b.txt");
    let mut doc = Document::new(Format::Dotenv, &[a.recipient(), b.recipient()]).unwrap();
    doc.set("TOKEN", SecretValue::new("tok_0123456789abcdef")).unwrap();
    let before = doc.encrypt().unwrap();
    assert!(Document::decrypt(&before, Format::Dotenv, std::slice::from_ref(&b), "f").is_ok());
    doc.rotate(&[a.recipient()]).unwrap();
    let after = doc.encrypt().unwrap();
    let token_line = |t: &str| t.lines().find(|l| l.starts_with("TOKEN=")).unwrap().to_owned();
    assert_ne!(token_line(&before), token_line(&after));
    let err = Document::decrypt(&after, Format::Dotenv, std::slice::from_ref(&b), "prod.enc.env").unwrap_err();
    assert!(matches!(err, SecretsError::NotARecipient { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("prod.enc.env") && message.contains("recipients add"), "{message}");
    // The old data key no longer opens the new file: a copy of the old file is all b keeps.
    assert!(Document::decrypt(&after, Format::Dotenv, std::slice::from_ref(&a), "f").is_ok());
    let _: Recipient = a.recipient();
}

#[test]
fn tampered_values_mac_and_truncation_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = keygen(dir.path(), "a.txt");
    let mut doc = Document::new(Format::Dotenv, &[a.recipient()]).unwrap();
    doc.set("ONE", SecretValue::new("value-number-one")).unwrap();
    doc.set("TWO", SecretValue::new("value-number-two")).unwrap();
    let text = doc.encrypt().unwrap();
    let ids = std::slice::from_ref(&a);

    // A flipped character inside a value's ciphertext.
    let line = text.lines().find(|l| l.starts_with("ONE=")).unwrap();
    let data_at = line.find("data:").unwrap() + 5;
    let mut changed = line.to_owned().into_bytes();
    changed[data_at] = if changed[data_at] == b'A' { b'B' } else { b'A' };
    let tampered = text.replace(line, &String::from_utf8(changed).unwrap());
    let err = Document::decrypt(&tampered, Format::Dotenv, ids, "t.env").unwrap_err();
    assert!(matches!(err, SecretsError::Tampered { .. }) && err.to_string().contains("ONE"), "{err}");

    // Swapping two values' ciphertexts: each is bound to its name.
    let one = text.lines().find(|l| l.starts_with("ONE=")).unwrap().trim_start_matches("ONE=");
    let two = text.lines().find(|l| l.starts_with("TWO=")).unwrap().trim_start_matches("TWO=");
    let swapped = text.replace(one, "@@").replace(two, one).replace("@@", two);
    assert!(matches!(
        Document::decrypt(&swapped, Format::Dotenv, ids, "t").unwrap_err(),
        SecretsError::Tampered { .. }
    ));

    // A removed line changes the MAC.
    let removed: String = text.lines().filter(|l| !l.starts_with("TWO=")).map(|l| format!("{l}\n")).collect();
    let err = Document::decrypt(&removed, Format::Dotenv, ids, "t").unwrap_err();
    assert!(err.to_string().contains("MAC"), "{err}");

    // A changed lastmodified breaks the MAC's additional data.
    let lm = text.lines().find(|l| l.starts_with("sops_lastmodified=")).unwrap();
    let moved = text.replace(lm, "sops_lastmodified=2001-01-01T00:00:00Z");
    assert!(matches!(Document::decrypt(&moved, Format::Dotenv, ids, "t").unwrap_err(), SecretsError::Tampered { .. }));

    // Truncated files, at every line.
    let lines: Vec<&str> = text.lines().collect();
    for keep in 0..lines.len() {
        let cut: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
        assert!(Document::decrypt(&cut, Format::Dotenv, ids, "t").is_err(), "kept {keep} lines");
    }
    let half = &text[..text.len() / 2];
    assert!(Document::decrypt(half, Format::Dotenv, ids, "t").is_err());
}

/// The age layer alone against the real `age` binary, including a multi-chunk payload.
#[test]
fn age_files_interoperate_with_the_age_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, identity) = keygen(dir.path(), "k.txt");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for plain in [&b""[..], b"0123456789abcdef0123456789abcdef", &big[..]] {
        // Ours → age -d.
        let ours =
            windlass_secrets::age::armor(&windlass_secrets::age::encrypt(plain, &[identity.recipient()]).unwrap());
        let path = dir.path().join("ours.age");
        std::fs::write(&path, &ours).unwrap();
        let out = Command::new("age").arg("-d").arg("-i").arg(&key_file).arg(&path).output().expect("age on PATH");
        assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, plain);
        // age -e (binary and armored) → ours.
        let src = dir.path().join("plain.bin");
        std::fs::write(&src, plain).unwrap();
        for armored in [false, true] {
            let mut cmd = Command::new("age");
            cmd.arg("-r").arg(identity.recipient().encode());
            if armored {
                cmd.arg("-a");
            }
            let out = cmd.arg(&src).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let binary = if armored {
                windlass_secrets::age::dearmor(&String::from_utf8(out.stdout).unwrap()).unwrap()
            } else {
                out.stdout
            };
            let back = windlass_secrets::age::decrypt(&binary, std::slice::from_ref(&identity)).unwrap();
            assert_eq!(&back[..], plain);
        }
    }
}
