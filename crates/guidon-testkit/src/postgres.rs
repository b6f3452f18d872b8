//! A PostgreSQL server of a test's own (initdb and pg_ctl of the installed
//! PostgreSQL, a temporary data directory, a free port), for tests that
//! stop the server under a running store or server: the shared server is
//! never touched. [`PrivatePostgres::start`] says why when this machine
//! cannot run one (no binaries, root without a `postgres` account), so the
//! test can print it and skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// A PostgreSQL server of this test's own, in a temporary directory; stopped
/// and removed on drop, panics included.
pub struct PrivatePostgres {
    bin: PathBuf,
    /// Its temporary directory: the data directory, the log, the socket.
    pub dir: PathBuf,
    pub port: u16,
    /// PostgreSQL refuses to run as root: run its tools as `postgres`.
    as_postgres: Option<RunAs>,
}

#[derive(Clone, Copy)]
enum RunAs {
    Runuser,
    Su,
}

impl PrivatePostgres {
    /// Sets up and starts the server, or says why this machine cannot.
    pub fn start() -> Result<PrivatePostgres, String> {
        let bin = find_bin().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin \
             or on PATH",
        )?;
        let as_postgres = if is_root() {
            if !succeeds(Command::new("id").args(["-u", "postgres"])) {
                return Err("running as root and there is no `postgres` account to run \
                            PostgreSQL as"
                    .to_owned());
            }
            if succeeds(Command::new("runuser").args(["-u", "postgres", "--", "true"])) {
                Some(RunAs::Runuser)
            } else if succeeds(Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", "true"]))
            {
                Some(RunAs::Su)
            } else {
                return Err(
                    "running as root and neither runuser nor su can run as `postgres`".to_owned(),
                );
            }
        } else {
            None
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("guidon-pg-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the server's temp dir");
        // From here on, drop stops the server and removes the directory.
        let pg = PrivatePostgres {
            bin,
            dir,
            port: crate::free_port(),
            as_postgres,
        };
        if pg.as_postgres.is_some() {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(&pg.dir)
                .output()
                .expect("run chown");
            assert!(out.status.success(), "chown: {}", text(&out));
        }
        let out = pg
            .tool("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        // fsync off: a stop, even an immediate one, loses nothing the
        // operating system has; only a machine crash would.
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 50\n",
            pg.port,
            pg.dir.display()
        );
        let conf = pg.data().join("postgresql.conf");
        let mut all = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        all.push_str(&settings);
        std::fs::write(&conf, all).expect("write postgresql.conf");
        pg.pg_ctl_start();
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The URL of its `postgres` database, as `application_name` (to find
    /// a session in `pg_stat_activity`).
    pub fn url(&self, application_name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?application_name={application_name}",
            self.port
        )
    }

    /// One of the server's tools, run as `postgres` when we are root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = match self.as_postgres {
            None => Command::new(program),
            Some(RunAs::Runuser) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            Some(RunAs::Su) => {
                // su takes one shell command: it runs the program with the
                // arguments that follow as its positional parameters.
                let mut c = Command::new("su");
                c.args(["postgres", "-s", "/bin/sh", "-c"]);
                c.arg(format!("exec {} \"$@\"", sh_quote(&program)));
                // `--`: what follows is not su's options ($0, then $@).
                c.args(["--", "sh"]);
                c
            }
        };
        // The test's working directory may be closed to `postgres`.
        command.current_dir(&self.dir);
        command
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn pg_ctl_start(&self) {
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n--- server log ---\n{}",
            text(&out),
            self.log_tail()
        );
    }

    /// Stops the server at once, as a crash would: no checkpoint, every
    /// session cut.
    pub fn pg_ctl_stop(&self) -> Result<(), String> {
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    }

    /// The server log's last 30 lines.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists()
            && let Err(e) = self.pg_ctl_stop()
        {
            eprintln!("could not stop the private PostgreSQL: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory holding initdb and pg_ctl: the newest installed version's.
fn find_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_tools(dir))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn succeeds(command: &mut Command) -> bool {
    command.output().is_ok_and(|out| out.status.success())
}

fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
