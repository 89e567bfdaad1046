//! Child processes on a lifeline, and what /proc says about them (CPU time, memory, children).
//!
//! Every server the benchmark starts runs under a small `sh` that holds the read end of a
//! pipe: when the benchmark ends for any reason, even SIGKILL, the pipe closes and the shell
//! sends SIGTERM to the server. Output goes to files in the log directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

/// Runs `"$@"` with stdin from /dev/null; SIGTERMs it when our pipe on fd 0 closes.
const LIFELINE: &str = r#"exec 3<&0
"$@" </dev/null &
child=$!
(cat <&3 >/dev/null; kill -TERM $child 2>/dev/null) &
wait $child"#;

/// A server started by the benchmark.
pub struct Server {
    /// Short name, used for log file names and messages.
    pub name: String,
    /// The lifeline shell.
    shell: Child,
    /// Our end of the lifeline; dropping it stops the server.
    lifeline: Option<ChildStdin>,
    /// The server's standard output, as a file.
    pub stdout: PathBuf,
    /// The server's standard error, as a file.
    pub stderr: PathBuf,
}

impl Server {
    /// Starts `program args` in `cwd` with extra `env`, logging into `logs/<name>.{out,err}`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        cwd: &Path,
        logs: &Path,
    ) -> anyhow::Result<Server> {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(LIFELINE)
            .arg("sh")
            .arg(program)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let shell = cmd
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut shell = shell;
        let lifeline = shell.stdin.take();
        Ok(Server {
            name: name.to_owned(),
            shell,
            lifeline,
            stdout,
            stderr,
        })
    }

    /// Pid of the server itself (the shell's child), once it is running.
    pub fn pid(&self) -> Option<u32> {
        children(self.shell.id()?).into_iter().find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() != "sh")
        })
    }

    /// Waits up to `within` for a line of standard output starting with `prefix`; returns it.
    pub async fn wait_line(&mut self, prefix: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(line) = out.lines().find(|l| l.starts_with(prefix)) {
                return Ok(line.to_owned());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} printed no `{prefix}` within {within:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error with the tail of the log if the server has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.shell.try_wait() {
            let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{} exited ({status}):\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }

    /// Closes the lifeline (the server gets SIGTERM) and waits for it to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.lifeline.take();
        match tokio::time::timeout(Duration::from_secs(30), self.shell.wait()).await {
            Ok(r) => {
                r?;
                Ok(())
            }
            Err(_) => {
                let _ = self.shell.kill().await;
                bail!("{} did not stop within 30 s of SIGTERM", self.name)
            }
        }
    }
}

/// Waits until something accepts TCP connections on loopback `port`.
pub async fn wait_port(server: &mut Server, port: u16, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        server.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on port {port} within {within:?}",
                server.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Live direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat_fields(p).is_some_and(|f| f[0] != "Z" && f[1].parse() == Ok(pid)))
        .collect()
}

/// Clock ticks per second of /proc times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// User plus system CPU time of a process (all its threads, live and exited), in ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    stat_fields(pid)
        .map(|f| f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0))
        .unwrap_or(0)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The (soft) limit on open files of this process, which the servers it starts inherit.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files": soft is fields[3], hard fields[4].
    fields.get(3)?.parse().ok()
}

/// True when this process runs as root (nginx then needs `user root;` to read our files).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    })
}
