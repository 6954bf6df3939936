//! The logs endpoint's stream framing: for a container without a TTY every chunk is an 8-byte
//! header (stream: 1 stdout, 2 stderr; three zero bytes; the payload's length, big-endian u32)
//! followed by the payload.

/// Splits a multiplexed log stream into lines, each as `<time> <stdout|stderr> <line>` (the
/// format of the process runtime's `output.log`), given lines that start with Docker's
/// timestamp. A truncated last frame is read as far as it goes.
pub fn demultiplex(mut body: &[u8]) -> Vec<String> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut lines = Vec::new();
    while body.len() >= 8 {
        let stream = body[0];
        let len = u32::from_be_bytes([body[4], body[5], body[6], body[7]]) as usize;
        let payload = &body[8..body.len().min(8 + len)];
        body = &body[8 + payload.len()..];
        let (pending, name) = match stream {
            2 => (&mut stderr, "stderr"),
            _ => (&mut stdout, "stdout"),
        };
        pending.extend_from_slice(payload);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            lines.push(format_line(&line[..line.len() - 1], name));
        }
    }
    for (pending, name) in [(stdout, "stdout"), (stderr, "stderr")] {
        if !pending.is_empty() {
            lines.push(format_line(&pending, name));
        }
    }
    lines
}

/// `<timestamp> <line>` from Docker becomes `<timestamp> <stream> <line>`.
fn format_line(line: &[u8], stream: &str) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    match text.split_once(' ') {
        Some((time, rest)) if time.contains('T') => format!("{time} {stream} {rest}"),
        _ => format!("- {stream} {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::demultiplex;

    fn frame(stream: u8, payload: &str) -> Vec<u8> {
        let mut bytes = vec![stream, 0, 0, 0];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload.as_bytes());
        bytes
    }

    #[test]
    fn frames_become_lines_with_their_stream() {
        let mut body = frame(1, "2026-01-01T00:00:00.1Z listening on 127.0.0.1:80\n2026-01-01T00:00:00.2Z second");
        body.extend(frame(2, "2026-01-01T00:00:00.3Z oops\n"));
        body.extend(frame(1, " line\n"));
        assert_eq!(
            demultiplex(&body),
            [
                "2026-01-01T00:00:00.1Z stdout listening on 127.0.0.1:80",
                "2026-01-01T00:00:00.3Z stderr oops",
                "2026-01-01T00:00:00.2Z stdout second line",
            ]
        );
    }

    #[test]
    fn truncated_frames_do_not_panic() {
        let mut body = frame(1, "2026-01-01T00:00:00Z complete\n");
        body.extend(&frame(2, "2026-01-01T00:00:00Z cut short")[..14]);
        assert_eq!(demultiplex(&body), ["2026-01-01T00:00:00Z stdout complete", "- stderr 2026-0"]);
    }
}
