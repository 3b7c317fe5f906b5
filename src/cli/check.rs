//! `driftguard check`: its flags and its output. The items and their judgement are
//! [`driftguard::check`].
use std::fmt::Write as _;
use std::process::ExitCode;

use driftguard::check::{gather, Item, Runtime, Status};

pub fn run(cfg: &driftguard::config::Config, json: bool, runtime: &Runtime) -> anyhow::Result<ExitCode> {
    if let Some(bin) = &runtime.containerd_bin {
        // A path the operator typed that is not there is a typo, not "containerd not installed".
        if !bin.is_file() {
            anyhow::bail!("--containerd {}: no such file", bin.display());
        }
    }
    let items = gather(cfg, runtime);
    if json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        print!("{}", render_text(&items));
    }
    Ok(if items.iter().any(|i| i.status == Status::Fail) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn render_text(items: &[Item]) -> String {
    let width = items.iter().map(|i| i.name.len()).max().unwrap_or(0);
    // "[warn] " wide, or "[unknown] " when an item needs root to be known.
    let tag_width = items.iter().map(|i| i.status.as_str().len() + 3).max().unwrap_or(0).max(7);
    let mut out = String::new();
    for i in items {
        let tag = format!("[{}]", i.status.as_str());
        let pad = " ".repeat(tag_width + width + 2);
        let _ = writeln!(out, "{tag:<tag_width$}{:<width$}  {}", i.name, i.detail.replace('\n', &format!("\n{pad}")));
        if let Some(fix) = &i.fix {
            let mut lines = fix.lines();
            if let Some(first) = lines.next() {
                let _ = writeln!(out, "{pad}fix: {first}");
            }
            for l in lines {
                let _ = writeln!(out, "{pad}     {l}");
            }
        }
    }
    let count = |s| items.iter().filter(|i| i.status == s).count();
    let _ = write!(out, "\n{} ok, {} warn, {} fail", count(Status::Ok), count(Status::Warn), count(Status::Fail));
    let _ = match count(Status::Unknown) {
        0 => writeln!(out),
        n => writeln!(out, ", {n} unknown (only root can tell: `sudo driftguard check`)"),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &'static str, status: Status, detail: &str, fix: Option<&str>) -> Item {
        Item { name, status, detail: detail.into(), fix: fix.map(str::to_string) }
    }

    #[test]
    fn text_rendering_aligns_and_shows_fixes() {
        let items = vec![
            item("btf", Status::Ok, "present", None),
            item("bpf_lsm", Status::Warn, "not active", Some("add lsm=x,bpf\nthen reboot")),
            item("root", Status::Fail, "uid 1000", Some("sudo")),
        ];
        let t = render_text(&items);
        assert!(t.contains("[ok]   btf      present\n"), "{t}");
        assert!(t.contains("[warn] bpf_lsm  not active\n"), "{t}");
        assert!(t.contains("fix: add lsm=x,bpf\n"), "{t}");
        assert!(t.contains("        then reboot\n"), "{t}");
        assert!(t.contains("1 ok, 1 warn, 1 fail"), "{t}");
        let j = serde_json::to_value(&items).unwrap();
        assert_eq!(j[0]["status"], "ok");
        assert!(j[0]["fix"].is_null());
        assert_eq!(j[2]["name"], "root");
    }
}
