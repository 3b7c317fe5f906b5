//! Reading an events file: its rotated predecessors first, a broken or cut line reported with
//! its number and skipped, and, with `--follow`, the lines written after (across a rotation by
//! rename, as the agent's `file_max_bytes` does, or a truncation, as logrotate's copytruncate).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The files of an events log, oldest first: `PATH.N` … `PATH.1` (plain files only: logrotate's
/// compressed `.gz` ones are not read), then `PATH` itself.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    for i in 1.. {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if !p.is_file() {
            break;
        }
        rotated.push(p);
    }
    rotated.reverse();
    rotated.push(path.to_path_buf());
    rotated
}

/// One line of an events file as an event, or why it is skipped.
pub fn parse_line(line: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON event ({e})"))?;
    if v.get("event").and_then(Value::as_str).is_none() {
        return Err("a JSON value without an \"event\" field".into());
    }
    Ok(v)
}

/// Read `path` from its start, calling `each` with every event and its raw line; a bad line is
/// reported on stderr with its number and skipped. Returns how many were skipped. With
/// `follow`, goes on with what is appended, until the process is interrupted: a rename of the
/// file (rotation) is followed to the new file once the old one is drained, a truncation
/// restarts at its beginning.
pub fn read(path: &Path, follow: bool, each: &mut dyn FnMut(&Value, &str)) -> std::io::Result<usize> {
    let mut f = std::fs::File::open(path)?;
    let mut ino = f.metadata()?.ino();
    let mut pos = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut n, mut skipped) = (0usize, 0usize);
    let mut one = |line: &[u8], n: usize, cut: bool, skipped: &mut usize| {
        let text = String::from_utf8_lossy(line);
        let line = text.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return;
        }
        match parse_line(line) {
            Ok(v) => each(&v, line),
            Err(e) => {
                let why = if cut { format!("{e}; the last line has no newline (cut, or being written)") } else { e };
                eprintln!("driftguard: warning: {} line {n}: {why}; skipped", path.display());
                *skipped += 1;
            }
        }
    };
    loop {
        let got = f.read(&mut chunk)?;
        if got > 0 {
            pos += got as u64;
            pending.extend_from_slice(&chunk[..got]);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                n += 1;
                one(&line, n, false, &mut skipped);
            }
            continue;
        }
        if !follow {
            if !pending.is_empty() {
                one(&pending, n + 1, true, &mut skipped);
            }
            return Ok(skipped);
        }
        std::thread::sleep(Duration::from_millis(200));
        match std::fs::metadata(path) {
            Ok(m) if m.ino() != ino => {
                // Rotated: the old file is drained (read returned 0); go on with the new one.
                f = std::fs::File::open(path)?;
                ino = f.metadata()?.ino();
                (pos, n) = (0, 0);
                pending.clear();
            }
            Ok(m) if m.len() < pos => {
                // Truncated in place (copytruncate).
                f.seek(SeekFrom::Start(0))?;
                (pos, n) = (0, 0);
                pending.clear();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_come_first_and_bad_lines_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("events.jsonl");
        std::fs::write(format!("{}.2", p.display()), "{\"event\":\"verdict\",\"n\":1}\n").unwrap();
        std::fs::write(format!("{}.1", p.display()), "{\"event\":\"verdict\",\"n\":2}\nnot json\n").unwrap();
        std::fs::write(
            &p,
            "{\"event\":\"notice\",\"n\":3}\n\n[1,2]\n{\"event\":\"verdict\",\"n\":4}\n{\"event\":\"ver",
        )
        .unwrap();
        std::fs::write(format!("{}.3.gz", p.display()), "x").unwrap();
        let files = log_files(&p);
        assert_eq!(files.len(), 3);
        let mut seen = Vec::new();
        let mut skipped = 0;
        for f in &files {
            skipped += read(f, false, &mut |v, _| seen.push(v["n"].as_u64().unwrap())).unwrap();
        }
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!(skipped, 3, "not json, a value without event, the cut last line");
        assert_eq!(log_files(&t.path().join("none")), [t.path().join("none")]);
    }

    #[test]
    fn follow_sees_appends_rotation_and_truncation() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("events.jsonl");
        std::fs::write(&p, "{\"event\":\"verdict\",\"n\":0}\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = p.clone();
        std::thread::spawn(move || {
            let _ = read(&path, true, &mut |v, _| {
                let _ = tx.send(v["n"].as_u64().unwrap_or(99));
            });
        });
        let next = || rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let append = |s: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(s.as_bytes()).unwrap();
        };
        // Each step waits for its line before the next write (the barrier), so the follower
        // has read everything before the file is rotated or truncated.
        assert_eq!(next(), 0, "the existing line first");
        append("{\"event\":\"verdict\",");
        append("\"n\":1}\n");
        assert_eq!(next(), 1, "a line written in two pieces");
        std::fs::rename(&p, format!("{}.1", p.display())).unwrap();
        std::fs::write(&p, "{\"event\":\"verdict\",\"n\":2,\"pad\":\"................................\"}\n").unwrap();
        assert_eq!(next(), 2, "follows the rotation");
        std::fs::write(&p, "{\"event\":\"verdict\",\"n\":3}\n").unwrap();
        assert_eq!(next(), 3, "follows the truncation");
    }
}
