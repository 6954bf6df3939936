//! The child's output file: lines appended with a timestamp and the stream, rotated by size; and
//! reading the last lines back across the rotated files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::spec::LogPolicy;

/// Appends `<RFC 3339 UTC timestamp> <stream> <line>` lines to a file, rotating it by size.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    policy: LogPolicy,
}

impl LogWriter {
    pub fn open(path: PathBuf, policy: LogPolicy) -> io::Result<Self> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter { path, file, size, policy })
    }

    /// Writes one line (without its line ending); unbuffered, so readers see it at once.
    pub fn write_line(&mut self, stream: &str, line: &[u8]) -> io::Result<()> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let entry = format!("{:.3} {stream} {}\n", Timestamp::now(), String::from_utf8_lossy(line));
        if self.size > 0 && self.size + entry.len() as u64 > self.policy.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(entry.as_bytes())?;
        self.size += entry.len() as u64;
        Ok(())
    }

    /// `output.log` becomes `output.log.1`, `.1` becomes `.2`..., the oldest beyond `keep` goes.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.policy.keep;
        if keep == 0 {
            ignore_missing(std::fs::remove_file(&self.path))?;
        } else {
            ignore_missing(std::fs::remove_file(rotated(&self.path, keep)))?;
            for i in (1..keep).rev() {
                ignore_missing(std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1)))?;
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Opened 0600: an instance's output may hold anything it prints.
fn open_append(path: &Path) -> io::Result<File> {
    windlass_failpoint::private::open_append(path)
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `<path>.<n>`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `path`'s rotated files and itself, oldest first (rotation numbers are contiguous from 1).
pub fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..).map(|n| rotated(path, n)).take_while(|file| file.exists()).collect();
    files.reverse();
    files.push(path.to_owned());
    files
}

/// The last `count` lines across `files` (oldest first), oldest first. Missing files are skipped
/// (a rotation may have moved one meanwhile).
pub fn tail(files: &[PathBuf], count: usize) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    for file in files.iter().rev() {
        if lines.len() >= count {
            break;
        }
        let mut older = match tail_of_file(file, count - lines.len()) {
            Ok(older) => older,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        older.append(&mut lines);
        lines = older;
    }
    Ok(lines)
}

/// The last `count` lines of one file, read backwards in blocks (the file can be large).
fn tail_of_file(path: &Path, count: usize) -> io::Result<Vec<String>> {
    const BLOCK: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let mut position = file.metadata()?.len();
    let mut buffer: Vec<u8> = Vec::new();
    // count + 1 line ends: a partial first line, then `count` whole ones.
    while position > 0 && buffer.iter().filter(|&&b| b == b'\n').count() <= count {
        let start = position.saturating_sub(BLOCK);
        let mut block = vec![0; usize::try_from(position - start).map_err(io::Error::other)?];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buffer);
        buffer = block;
        position = start;
    }
    let text = String::from_utf8_lossy(&buffer);
    let mut lines: Vec<&str> = text.lines().collect();
    if position > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(count);
    Ok(lines[skip..].iter().map(|line| (*line).to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_back_across_blocks_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let (older, newer) = (dir.path().join("a"), dir.path().join("b"));
        // Lines of many lengths, so block boundaries fall everywhere; more than one block each.
        let lines: Vec<String> = (0..6000).map(|i| format!("{i} {}", "x".repeat(i % 97))).collect();
        std::fs::write(&older, lines[..3000].iter().map(|line| format!("{line}\n")).collect::<String>()).unwrap();
        std::fs::write(&newer, lines[3000..].iter().map(|line| format!("{line}\n")).collect::<String>()).unwrap();
        assert!(std::fs::metadata(&newer).unwrap().len() > 2 * 64 * 1024);
        let files = [older, newer, dir.path().join("missing")];
        for count in [0, 1, 2, 999, 2999, 3000, 3001, 4500, 6000, 7000] {
            let expected = &lines[lines.len().saturating_sub(count)..];
            assert_eq!(tail(&files, count).unwrap(), expected, "count {count}");
        }
    }

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        let mut writer = LogWriter::open(path.clone(), LogPolicy { max_bytes: 100, keep: 2 }).unwrap();
        for i in 0..20 {
            writer.write_line("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(files_oldest_first(&path), [rotated(&path, 2), rotated(&path, 1), path.clone()]);
        assert!(!rotated(&path, 3).exists());
        let all = tail(&files_oldest_first(&path), 100).unwrap();
        assert!(all.last().unwrap().ends_with(" stdout line 19"), "{all:?}");
        let numbers: Vec<u32> = all.iter().map(|line| line.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert_eq!(numbers, (20 - all.len() as u32..20).collect::<Vec<_>>(), "contiguous and in order");

        let mut unkept = LogWriter::open(dir.path().join("other.log"), LogPolicy { max_bytes: 10, keep: 0 }).unwrap();
        unkept.write_line("stderr", b"first").unwrap();
        unkept.write_line("stderr", b"second").unwrap();
        assert_eq!(files_oldest_first(&dir.path().join("other.log")).len(), 1);
        assert!(std::fs::read_to_string(dir.path().join("other.log")).unwrap().ends_with(" stderr second\n"));
    }
}
