//! `driftguard events`: show verdict, notice and admission events, filtered, as JSON lines or
//! one aligned text line each.
//!
//! Sources: the live agent's events socket (the agent owns the ring buffer), or without an
//! agent the pinned ring buffer itself; or the events file (`--file`, `[events] file`) with its
//! rotated predecessors, followed with `--follow`.
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use driftguard::agent::{self, output, Registry};
use driftguard::config::Config;
use driftguard::enforcer;
use serde_json::Value;

mod filter;
mod source;
mod text;
mod time;

use filter::Filter;

/// Where the events come from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// The running agent, or the pinned ring buffer: new events until interrupted.
    Live,
    /// An events file (with its rotated files); `follow`: and what is appended to it.
    File { path: PathBuf, follow: bool },
}

fn source(cfg: &Config, a: &crate::EventsArgs) -> anyhow::Result<Source> {
    let file_wanted = a.file.is_some() || a.since.is_some() || a.until.is_some();
    if !file_wanted {
        return Ok(Source::Live);
    }
    let path = match &a.file {
        Some(Some(p)) => p.clone(),
        _ => cfg.events.file.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no events file to read: [events] file is not set in the configuration (give --file PATH, or \
                 leave out --since/--until to follow the live events)"
            )
        })?,
    };
    if a.follow && a.until.is_some() {
        anyhow::bail!("--until ends the window: it cannot be combined with --follow");
    }
    Ok(Source::File { path, follow: a.follow })
}

fn filter(a: &crate::EventsArgs) -> anyhow::Result<Filter> {
    let now = time::now();
    let bound = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<time::Micros>> {
        v.as_deref().map(|s| time::parse_bound(s, now).map_err(|e| anyhow::anyhow!("{flag}: {e}"))).transpose()
    };
    let f = Filter {
        namespaces: a.namespace.clone(),
        pods: a.pod.clone(),
        containers: a.container.clone(),
        rules: a.rule.clone(),
        actions: a.action.clone(),
        since: bound("--since", &a.since)?,
        until: bound("--until", &a.until)?,
    };
    f.validate().map_err(anyhow::Error::msg)?;
    Ok(f)
}

/// Prints matching events in the chosen format.
struct Printer {
    filter: Filter,
    text: bool,
    out: std::io::Stdout,
}

impl Printer {
    fn print(&mut self, ev: &Value, raw: Option<&str>) -> std::io::Result<()> {
        if !self.filter.matches(ev) {
            return Ok(());
        }
        let mut out = self.out.lock();
        if self.text {
            writeln!(out, "{}", text::line(ev))?;
        } else {
            match raw {
                Some(r) => writeln!(out, "{r}")?,
                None => writeln!(out, "{ev}")?,
            }
        }
        out.flush()
    }
}

pub fn run(cfg: &Config, a: &crate::EventsArgs) -> anyhow::Result<ExitCode> {
    let src = source(cfg, a)?;
    let mut p = Printer { filter: filter(a)?, text: a.output == crate::EventsOutput::Text, out: std::io::stdout() };
    if p.text {
        writeln!(p.out.lock(), "{}", text::header())?;
    }
    match src {
        Source::File { path, follow } => {
            let files = source::log_files(&path);
            let last = files.len() - 1;
            let mut skipped = 0;
            let mut err = None;
            for (i, f) in files.iter().enumerate() {
                let r = source::read(f, follow && i == last, &mut |ev, raw| {
                    if let Err(e) = p.print(ev, Some(raw)) {
                        err.get_or_insert(e);
                    }
                });
                match r {
                    Ok(n) => skipped += n,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && i == last && !follow && last > 0 => {}
                    Err(e) => return Err(e).with_context(|| format!("reading events file {}", f.display())),
                }
                if let Some(e) = err.take() {
                    // stdout closed (`| head`): done.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(e.into());
                }
            }
            if skipped > 0 {
                eprintln!("driftguard: {skipped} line(s) of {} skipped (see the warnings above)", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Source::Live => live(cfg, &mut p),
    }
}

fn live(cfg: &Config, p: &mut Printer) -> anyhow::Result<ExitCode> {
    let state = agent::state_dir();
    let sock = agent::events_socket(&state);
    if let Ok(stream) = std::os::unix::net::UnixStream::connect(&sock) {
        eprintln!("following the agent's events ({})", sock.display());
        for line in BufReader::new(stream).lines() {
            let line = line.context("reading the events socket")?;
            match serde_json::from_str::<Value>(&line) {
                Ok(v) if v["event"] == "lagged" => {
                    eprintln!(
                        "driftguard: warning: too slow: the agent dropped {} event(s) for this reader",
                        v["missed"]
                    )
                }
                Ok(v) => match p.print(&v, Some(&line)) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                    r => r?,
                },
                Err(e) => eprintln!("driftguard: warning: not a JSON event from the agent ({e}); skipped"),
            }
        }
        eprintln!("the agent closed the events socket");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("no agent running: reading the pinned ring buffer under {}", cfg.bpf.pin_dir.display());
    let mut stream = enforcer::open_pinned_events(&cfg.bpf.pin_dir).context("opening pinned events")?;
    let registry = Registry::load(agent::registry_file(&state));
    let clock = output::BootClock::now();
    let node = cfg.node_name();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        while let Some(ev) = stream.next().await {
            let v = serde_json::to_value(output::enrich(&ev, &node, &registry, &clock))?;
            match p.print(&v, None) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return anyhow::Ok(()),
                r => r?,
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut crate::EventsArgs)) -> crate::EventsArgs {
        let mut a = crate::EventsArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn the_source_follows_the_flags() {
        let mut cfg = Config::default();
        assert_eq!(source(&cfg, &args(|_| {})).unwrap(), Source::Live);
        assert_eq!(source(&cfg, &args(|a| a.follow = true)).unwrap(), Source::Live);
        let e = source(&cfg, &args(|a| a.since = Some("1h".into()))).unwrap_err().to_string();
        assert!(e.contains("[events] file is not set"), "{e}");
        cfg.events.file = Some("/var/log/driftguard/events.jsonl".into());
        let file = |follow| Source::File { path: "/var/log/driftguard/events.jsonl".into(), follow };
        assert_eq!(source(&cfg, &args(|a| a.since = Some("1h".into()))).unwrap(), file(false));
        assert_eq!(source(&cfg, &args(|a| a.file = Some(None))).unwrap(), file(false));
        assert_eq!(
            source(
                &cfg,
                &args(|a| {
                    a.file = Some(Some("/x".into()));
                    a.follow = true
                })
            )
            .unwrap(),
            Source::File { path: "/x".into(), follow: true }
        );
        assert!(source(
            &cfg,
            &args(|a| {
                a.follow = true;
                a.until = Some("1h".into());
                a.file = Some(None)
            })
        )
        .is_err());
    }

    #[test]
    fn bad_filters_name_the_flag() {
        let e = filter(&args(|a| a.since = Some("yesterday".into()))).unwrap_err().to_string();
        assert!(e.starts_with("--since: \"yesterday\" is neither"), "{e}");
        let e = filter(&args(|a| a.rule = vec!["drfit".into()])).unwrap_err().to_string();
        assert!(e.starts_with("--rule \"drfit\""), "{e}");
        assert!(filter(&args(|a| a.namespace = vec!["shop".into()])).is_ok());
    }
}
