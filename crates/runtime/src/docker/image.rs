//! Images `FROM scratch` holding one static executable: the ELF check, the build context (a
//! ustar archive of a Dockerfile and the binary) and the build's streamed answer.

use std::path::Path;

/// Where the executable is in the image, and the image's entrypoint.
pub const PROGRAM_IN_IMAGE: &str = "/program";

/// The hint every refusal of a dynamically linked executable carries.
pub const STATIC_HINT: &str = "a `FROM scratch` image has no dynamic loader or libc: build a static executable, e.g. \
     RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu \
     (scripts/build-static-demo does this for windlass-demo)";

const PT_INTERP: u32 = 3;

/// Why an executable cannot run alone in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStatic {
    /// It names a dynamic loader (`PT_INTERP`).
    Dynamic { interpreter: String },
    /// It is not an ELF file (a script, say), or one this check cannot read.
    NotElf(String),
}

/// Checks that `bytes` are an ELF executable without a `PT_INTERP` program header (static or
/// static-pie).
pub fn check_static(bytes: &[u8]) -> Result<(), NotStatic> {
    let not_elf = |why: &str| Err(NotStatic::NotElf(why.to_owned()));
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        return if bytes.starts_with(b"#!") {
            not_elf("it is a script (#!), and the image has no interpreter for it")
        } else {
            not_elf("it is not an ELF executable")
        };
    }
    let is_64 = match bytes[4] {
        1 => false,
        2 => true,
        _ => return not_elf("its ELF class is unknown"),
    };
    let little = match bytes[5] {
        1 => true,
        2 => false,
        _ => return not_elf("its ELF byte order is unknown"),
    };
    let read = |at: usize, len: usize| -> Option<u64> {
        let field = bytes.get(at..at.checked_add(len)?)?;
        let mut value = 0u64;
        for i in 0..len {
            let byte = if little { field[len - 1 - i] } else { field[i] };
            value = (value << 8) | u64::from(byte);
        }
        Some(value)
    };
    let (phoff, phentsize, phnum) = if is_64 {
        (read(0x20, 8), read(0x36, 2), read(0x38, 2))
    } else {
        (read(0x1c, 4), read(0x2a, 2), read(0x2c, 2))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return not_elf("its ELF header is truncated");
    };
    let (phoff, phentsize) = (usize::try_from(phoff).unwrap_or(usize::MAX), phentsize as usize);
    for index in 0..phnum as usize {
        let Some(entry) = index.checked_mul(phentsize).and_then(|off| off.checked_add(phoff)) else {
            return not_elf("its program headers are out of range");
        };
        let Some(p_type) = read(entry, 4) else { return not_elf("its program headers are truncated") };
        if p_type as u32 != PT_INTERP {
            continue;
        }
        let (offset, size) =
            if is_64 { (read(entry + 8, 8), read(entry + 32, 8)) } else { (read(entry + 4, 4), read(entry + 16, 4)) };
        let interpreter = offset
            .zip(size)
            .and_then(|(offset, size)| bytes.get(usize::try_from(offset).ok()?..usize::try_from(offset + size).ok()?))
            .map(|raw| String::from_utf8_lossy(raw).trim_end_matches('\0').to_owned())
            .unwrap_or_else(|| "unreadable".to_owned());
        return Err(NotStatic::Dynamic { interpreter });
    }
    Ok(())
}

/// The Dockerfile of an image that runs just the executable.
pub fn dockerfile() -> String {
    format!("FROM scratch\nCOPY program {PROGRAM_IN_IMAGE}\nENTRYPOINT [\"{PROGRAM_IN_IMAGE}\"]\n")
}

/// A build context: a ustar archive of the Dockerfile and the executable (mode 0755).
pub fn context(program: &[u8]) -> Vec<u8> {
    let dockerfile = dockerfile();
    let mut tar = Vec::with_capacity(program.len() + 4096);
    append(&mut tar, "Dockerfile", 0o644, dockerfile.as_bytes());
    append(&mut tar, "program", 0o755, program);
    // The end of the archive: two zero blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

fn append(tar: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let mut header = [0u8; 512];
    let octal = |field: &mut [u8], value: u64| {
        // Digits right-aligned, NUL-terminated.
        let width = field.len() - 1;
        let digits = format!("{value:0width$o}");
        field[..width].copy_from_slice(&digits.as_bytes()[digits.len() - width..]);
    };
    header[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut header[100..108], u64::from(mode));
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], data.len() as u64);
    octal(&mut header[136..148], 0); // mtime: fixed, so equal contents make equal contexts
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let digits = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(digits.as_bytes());
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    let padding = (512 - data.len() % 512) % 512;
    tar.resize(tar.len() + padding, 0);
}

/// A build the Docker Engine refused: its error message and the tail of the build's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildFailed(pub String);

/// Reads a build's answer (one JSON object per line): the image id it reports, or the error.
pub fn build_outcome(body: &[u8]) -> Result<Option<String>, BuildFailed> {
    let mut id = None;
    let mut output = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    for message in stream.by_ref() {
        let Ok(message) = message else { break };
        if let Some(error) = message.get("error").and_then(|e| e.as_str()) {
            let context: String = output.join("");
            return Err(BuildFailed(format!("{}{}", error.trim(), tail_of(&context))));
        }
        if let Some(text) = message.get("stream").and_then(|s| s.as_str()) {
            output.push(text.to_owned());
            // The classic builder ends with "Successfully built <short id>".
            if let Some(short) = text.trim().strip_prefix("Successfully built ") {
                id.get_or_insert_with(|| short.trim().to_owned());
            }
        }
        if let Some(aux) = message.get("aux").and_then(|a| a.get("ID")).and_then(|i| i.as_str()) {
            id = Some(aux.to_owned());
        }
    }
    Ok(id)
}

fn tail_of(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(5);
    format!(" (build output: {})", lines[from..].join(" | "))
}

/// A repository name for `service`: `windlass/<service>`, with characters Docker refuses in a
/// repository name replaced by `-`.
pub fn repository(service: Option<&str>) -> String {
    let cleaned: String = service
        .unwrap_or("instance")
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .take(100)
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("windlass/{}", if cleaned.is_empty() { "instance" } else { cleaned })
}

/// Reads the executable, for hashing and the context.
pub fn read_program(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf64(with_interp: bool) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x200];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        // Program header 0: PT_LOAD; program header 1: PT_INTERP or PT_NOTE.
        bytes[64..68].copy_from_slice(&1u32.to_le_bytes());
        let second = 64 + 56;
        let p_type: u32 = if with_interp { 3 } else { 4 };
        bytes[second..second + 4].copy_from_slice(&p_type.to_le_bytes());
        bytes[second + 8..second + 16].copy_from_slice(&0x180u64.to_le_bytes());
        let interp = b"/lib64/ld-linux-x86-64.so.2\0";
        bytes[second + 32..second + 40].copy_from_slice(&(interp.len() as u64).to_le_bytes());
        bytes[0x180..0x180 + interp.len()].copy_from_slice(interp);
        bytes
    }

    #[test]
    fn a_program_interpreter_header_means_dynamic() {
        assert_eq!(check_static(&elf64(false)), Ok(()));
        assert_eq!(
            check_static(&elf64(true)),
            Err(NotStatic::Dynamic { interpreter: "/lib64/ld-linux-x86-64.so.2".into() })
        );
        assert!(matches!(check_static(b"#!/bin/sh\necho hi\n"), Err(NotStatic::NotElf(_))));
        assert!(matches!(check_static(b"\x7fELF"), Err(NotStatic::NotElf(_))));
        // Headers pointing past the end are refused, not read out of bounds.
        let mut broken = elf64(false);
        broken[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(check_static(&broken), Err(NotStatic::NotElf(_))));
    }

    #[test]
    fn the_system_shell_is_dynamic() {
        let shell = std::fs::read("/bin/sh").unwrap();
        assert!(matches!(check_static(&shell), Err(NotStatic::Dynamic { .. })));
    }

    #[test]
    fn contexts_are_ustar_archives_in_512_byte_blocks() {
        let tar = context(b"binary");
        assert_eq!(tar.len() % 512, 0);
        assert_eq!(&tar[257..263], b"ustar\0");
        assert_eq!(&tar[..10], b"Dockerfile");
        let second = 512 * 2;
        assert_eq!(&tar[second..second + 7], b"program");
        assert_eq!(&tar[second + 100..second + 107], b"0000755");
        assert_eq!(&tar[second + 512..second + 518], b"binary");
        // The checksum counts the header's bytes with the checksum field as spaces.
        let mut header = tar[second..second + 512].to_vec();
        let recorded = u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(recorded, header.iter().map(|&b| u32::from(b)).sum::<u32>());
    }

    #[test]
    fn build_answers_give_the_id_or_the_error() {
        let ok = br#"{"stream":"Step 1/3 : FROM scratch\n"}
{"aux":{"ID":"sha256:abc"}}
{"stream":"Successfully built abc\n"}"#;
        assert_eq!(build_outcome(ok), Ok(Some("sha256:abc".into())));
        let failed = br#"{"stream":"Step 2/3 : COPY program /program\n"}
{"errorDetail":{"message":"no such file"},"error":"no such file"}"#;
        let err = build_outcome(failed).unwrap_err().0;
        assert!(err.starts_with("no such file") && err.contains("COPY program"), "{err}");
    }

    #[test]
    fn repositories_are_docker_names() {
        assert_eq!(repository(Some("web")), "windlass/web");
        assert_eq!(repository(Some("Web API")), "windlass/web-api");
        assert_eq!(repository(None), "windlass/instance");
    }
}
