//! Command-line flags and `-o` mount options, resolved onto one [`MountConfig`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::cache::PrefetchConfig;
use crate::credentials::{self, Env};
use crate::fs::FsConfig;
use crate::store::s3::S3Settings;

#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "s3mount",
    version,
    about = "Mount an S3 bucket (AWS or any S3-compatible store) as a local directory",
    after_help = "Examples:\n  s3mount my-bucket /mnt/data\n  s3mount my-bucket:some/prefix /mnt/data --endpoint https://s3.example.net\n  s3mount --service-key key.json /mnt/data\n  s3mount my-bucket /mnt/data -o ro,allow_other,uid=1000,gid=1000"
)]
pub struct Cli {
    /// BUCKET[:PREFIX] and MOUNTPOINT; the bucket may be left out when --service-key names one
    #[arg(value_name = "[BUCKET[:PREFIX]] MOUNTPOINT", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
    /// S3 endpoint URL for S3-compatible stores (e.g. https://s3.example.net, http://127.0.0.1:9000)
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Region (default: from the credential source, else us-east-1)
    #[arg(long)]
    pub region: Option<String>,
    /// Profile from ~/.aws/credentials and ~/.aws/config
    #[arg(long)]
    pub profile: Option<String>,
    /// Platform service-key file (JSON with access_key_id, secret_access_key, region, bucket)
    #[arg(long, value_name = "FILE")]
    pub service_key: Option<PathBuf>,
    /// Do not sign requests (public buckets)
    #[arg(long)]
    pub no_sign_request: bool,
    /// Use path-style addressing (automatic for IP addresses and localhost)
    #[arg(long)]
    pub force_path_style: bool,
    /// Mount read-only: every write fails with EROFS
    #[arg(long)]
    pub read_only: bool,
    /// Stay in the foreground instead of detaching once the mount is live
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options, comma-separated (every flag has one: endpoint=, profile=, ro, uid=, ...)
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Owner of files without uid metadata (default: the mounting user); given, it overrides metadata
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of files without gid metadata (default: the mounting user's group)
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files without mode metadata, octal
    #[arg(long, value_name = "OCTAL", default_value = "0644", value_parser = parse_octal)]
    pub file_mode: u16,
    /// Permission bits of directories without mode metadata, octal
    #[arg(long, value_name = "OCTAL", default_value = "0755", value_parser = parse_octal)]
    pub dir_mode: u16,
    /// Bits cleared from every mode, octal
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    pub umask: Option<u16>,
    /// Let other users access the mount (turns on default_permissions)
    #[arg(long)]
    pub allow_other: bool,
    /// Seconds metadata and listings are cached (other clients' changes show up after this)
    #[arg(long, value_name = "SECONDS", default_value = "1")]
    pub metadata_ttl: f64,
    /// Memory for cached blocks of file data (e.g. 64M, 1G)
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Largest read-ahead per open file (e.g. 32M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_prefetch: Option<u64>,
    /// Listings with at most this many entries are completed with a HEAD each (modes, symlinks)
    #[arg(long, value_name = "N", default_value = "1000")]
    pub list_stat_limit: usize,
    /// Attempts per request (exponential backoff with jitter between them)
    #[arg(long, value_name = "N", default_value = "10")]
    pub retries: u32,
    /// Seconds one operation may take, retries included; then it fails with EIO/ETIMEDOUT
    #[arg(long, value_name = "SECONDS", default_value = "120")]
    pub op_timeout: f64,
    /// Seconds to wait for a TCP connection to the endpoint
    #[arg(long, value_name = "SECONDS", default_value = "5")]
    pub connect_timeout: f64,
    /// Directory where files being written are staged (unnamed temp files)
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,
    /// Local disk for staging writes, all files together (default: half the free space of the
    /// staging directory); beyond it writes fail with ENOSPC
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub tmp_size: Option<u64>,
    /// Part uploads in flight per file being written (each holds one part, 8 MiB or more, in memory)
    #[arg(long, value_name = "N", default_value = "4")]
    pub max_inflight_parts: usize,
    /// Where the record of uploads in progress is kept, so that a later mount can abort what a
    /// killed one left behind (default: /var/lib/s3mount/uploads for root, else
    /// $XDG_STATE_HOME or ~/.local/state, under s3mount/uploads)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Leave alone the multipart uploads that an earlier s3mount of this bucket started and
    /// never finished because it was killed (by default the mount aborts them)
    #[arg(long)]
    pub keep_stale_uploads: bool,
    /// No extended attributes at all (ENOSYS; the kernel stops asking). By default `user.`
    /// attributes work and other namespaces answer ENOTSUP
    #[arg(long)]
    pub no_xattr: bool,
    /// Send a CRC32C checksum with every upload for the store to verify (AWS and stores with
    /// flexible checksums; off by default, as many S3-compatible stores reject them)
    #[arg(long)]
    pub checksums: bool,
    /// File data bypasses the kernel page cache: for files read once (streaming large objects),
    /// so they are not cached twice. Re-reads then come from --cache-size or the store
    #[arg(long)]
    pub direct_io: bool,
    /// Debug logging (a RUST_LOG filter is honoured too)
    #[arg(short, long)]
    pub debug: bool,
    /// Internal: the detached mount process
    #[arg(long, hide = true)]
    pub daemon_child: bool,
    /// Ignore unknown -o options instead of failing (mount -s)
    #[arg(long, hide = true)]
    pub sloppy: bool,
}

/// What mount(8) asked of a `mount.s3mount` helper besides the mount itself.
#[derive(Debug, Default, PartialEq)]
pub struct HelperFlags {
    /// `-f`: do everything but the mount.
    pub fake: bool,
}

/// mount(8) runs helpers as `mount.TYPE SPEC DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]`, where
/// `-f` means "fake", not "foreground". Under a `mount.*` name, those arguments are translated
/// into ours; otherwise they are returned unchanged.
pub fn helper_args(args: Vec<String>) -> Result<(Vec<String>, HelperFlags), String> {
    let prog = args.first().cloned().unwrap_or_default();
    let name = prog.rsplit('/').next().unwrap_or(&prog).to_string();
    if !name.starts_with("mount.") {
        return Ok((args, HelperFlags::default()));
    }
    let mut out = vec!["s3mount".to_string()];
    let mut flags = HelperFlags::default();
    let mut positional = Vec::new();
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => out.extend(["-o".to_string(), it.next().ok_or("-o needs options")?]),
            "-t" | "-N" => {
                it.next();
            }
            s if s.starts_with("-o") => out.extend(["-o".to_string(), s[2..].to_string()]),
            s if s.starts_with('-') && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'f' => flags.fake = true,
                        's' => out.push("--sloppy".into()),
                        'n' | 'v' | 'r' | 'w' => {}
                        other => return Err(format!("unknown mount helper flag -{other}")),
                    }
                }
            }
            _ => positional.push(a),
        }
    }
    if positional.len() != 2 {
        return Err(format!("usage: {name} SPEC DIR [-sfnv] [-o OPTIONS]"));
    }
    out.splice(1..1, positional);
    Ok((out, flags))
}

const ONE_DAY: f64 = 86_400.0;
const ONE_YEAR: f64 = 365.0 * ONE_DAY;

/// A duration option: a finite number of seconds, at least `min` (smaller values are raised to
/// it) and at most `max`; anything else is a clear error rather than a panic later.
fn seconds(name: &str, v: f64, min: f64, max: f64) -> Result<Duration, String> {
    if !v.is_finite() || v < 0.0 || v > max {
        return Err(format!(
            "--{name} {v}: expected a number of seconds from 0 to {max}"
        ));
    }
    Ok(Duration::from_secs_f64(v.max(min)))
}

fn parse_octal(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 0644"))
}

/// `1048576`, `64M`, `64MiB`, `1G`, `512k`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = t[digits.len()..].to_ascii_lowercase();
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64M"))?;
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Options mount(8), systemd and fstab add that mean nothing to us.
fn ignored_option(name: &str) -> bool {
    matches!(
        name,
        "_netdev"
            | "nofail"
            | "noauto"
            | "auto"
            | "defaults"
            | "rw"
            | "user"
            | "nouser"
            | "users"
            | "dev"
            | "nodev"
            | "suid"
            | "nosuid"
            | "exec"
            | "noexec"
            | "atime"
            | "noatime"
            | "relatime"
            | "nodiratime"
            | "async"
            | "sync"
            | "owner"
            | "group"
            | "comment"
            | "bg"
            | "fg"
    ) || name.starts_with("x-systemd.")
        || name.starts_with("x-")
        || name.starts_with("comment=")
}

impl Cli {
    /// Folds `-o` options onto the flags, so both spellings mean one thing.
    pub fn apply_mount_options(&mut self) -> Result<(), String> {
        let opts: Vec<String> = self
            .options
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        for opt in opts {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (opt.as_str(), None),
            };
            let need =
                || value.ok_or_else(|| format!("mount option {name} needs a value ({name}=...)"));
            let num = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("mount option {name}={v}: not a number"))
            };
            match name.replace('-', "_").as_str() {
                "ro" | "read_only" => self.read_only = true,
                "allow_other" => self.allow_other = true,
                "allow_root" => self.allow_other = true,
                "default_permissions" => {}
                "foreground" => self.foreground = true,
                "debug" => self.debug = true,
                "no_sign_request" => self.no_sign_request = true,
                "force_path_style" | "use_path_request_style" => self.force_path_style = true,
                "endpoint" | "url" => self.endpoint = Some(need()?.to_string()),
                "region" => self.region = Some(need()?.to_string()),
                "profile" => self.profile = Some(need()?.to_string()),
                "service_key" => self.service_key = Some(need()?.into()),
                "uid" => self.uid = Some(num(need()?)?),
                "gid" => self.gid = Some(num(need()?)?),
                "umask" => self.umask = Some(parse_octal(need()?)?),
                "file_mode" => self.file_mode = parse_octal(need()?)?,
                "dir_mode" => self.dir_mode = parse_octal(need()?)?,
                "metadata_ttl" => {
                    self.metadata_ttl = need()?.parse().map_err(|_| {
                        format!(
                            "mount option metadata_ttl={}: not a number",
                            value.unwrap_or("")
                        )
                    })?
                }
                "cache_size" => self.cache_size = parse_size(need()?)?,
                "max_prefetch" => self.max_prefetch = Some(parse_size(need()?)?),
                "list_stat_limit" => self.list_stat_limit = num(need()?)? as usize,
                "tmp_dir" => self.tmp_dir = Some(need()?.into()),
                "state_dir" => self.state_dir = Some(need()?.into()),
                "keep_stale_uploads" => self.keep_stale_uploads = true,
                "retries" => self.retries = num(need()?)?,
                "op_timeout" => {
                    self.op_timeout = need()?
                        .parse()
                        .map_err(|_| "mount option op_timeout: not a number".to_string())?
                }
                "tmp_size" => self.tmp_size = Some(parse_size(need()?)?),
                "max_inflight_parts" => self.max_inflight_parts = num(need()?)? as usize,
                "connect_timeout" => {
                    self.connect_timeout = need()?
                        .parse()
                        .map_err(|_| "mount option connect_timeout: not a number".to_string())?
                }
                "sloppy" => self.sloppy = true,
                "noxattr" | "no_xattr" => self.no_xattr = true,
                "direct_io" => self.direct_io = true,
                "checksums" => self.checksums = true,
                n if ignored_option(n) || ignored_option(&opt) => {}
                _ if self.sloppy => {
                    tracing::warn!("ignoring unknown mount option {opt:?} (sloppy)")
                }
                _ => return Err(format!("unknown mount option {opt:?}")),
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct MountConfig {
    pub bucket: String,
    pub prefix: String,
    pub mountpoint: PathBuf,
    pub s3: S3Settings,
    pub fs: FsConfig,
    pub foreground: bool,
    pub daemon_child: bool,
    pub allow_other: bool,
    pub credential_source: String,
    /// Where the store is, for messages (never holds secrets).
    pub endpoint_label: String,
    /// What was asked of the credential sources, to read them again on SIGHUP.
    pub credential_request: credentials::Request,
    /// Where the upload journal lives (`None`: no journal, no clean-up).
    pub state_dir: Option<PathBuf>,
    /// Abort the uploads that killed s3mount processes left in this bucket.
    pub abort_stale_uploads: bool,
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zeroes are a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs to fill.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// `bucket`, `bucket:prefix`, `s3://bucket/prefix`.
pub fn parse_source(s: &str) -> Result<(String, String), String> {
    let (bucket, prefix) = if let Some(rest) = s.strip_prefix("s3://") {
        rest.split_once('/').unwrap_or((rest, ""))
    } else {
        s.split_once(':').unwrap_or((s, ""))
    };
    if bucket.is_empty() || bucket.contains('/') {
        return Err(format!("{s:?} is not BUCKET or BUCKET:PREFIX"));
    }
    let prefix = prefix.trim_matches('/');
    Ok((bucket.to_string(), prefix.to_string()))
}

fn host_of(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = hostport
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(hostport);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    hostport.split(':').next().unwrap_or("")
}

/// Virtual-hosted addressing cannot work for an IP address or localhost.
pub fn needs_path_style(endpoint: &str) -> bool {
    let host = host_of(endpoint);
    host.parse::<IpAddr>().is_ok() || host == "localhost" || host.ends_with(".localhost")
}

impl MountConfig {
    pub fn from_cli(mut cli: Cli, env: &dyn Env) -> Result<Self, String> {
        cli.apply_mount_options()?;
        let (source, mountpoint) = match cli.args.as_slice() {
            [m] => (None, m.clone()),
            [s, m] => (Some(s.clone()), m.clone()),
            _ => return Err("expected [BUCKET[:PREFIX]] MOUNTPOINT".into()),
        };
        let credential_request = credentials::Request {
            service_key: cli
                .service_key
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            profile: cli.profile.clone(),
            anonymous: cli.no_sign_request,
        };
        let creds = credentials::resolve(&credential_request, env)?;
        let (bucket, prefix) = match (&source, &creds.bucket) {
            (Some(s), _) => parse_source(s)?,
            (None, Some(b)) => parse_source(b)?,
            (None, None) => {
                return Err("no bucket given: use s3mount BUCKET MOUNTPOINT, or a service key that names one".into());
            }
        };
        let mountpoint = PathBuf::from(&mountpoint);
        let md = std::fs::metadata(&mountpoint)
            .map_err(|e| format!("mountpoint {}: {e}", mountpoint.display()))?;
        if !md.is_dir() {
            return Err(format!(
                "mountpoint {} is not a directory",
                mountpoint.display()
            ));
        }
        let mountpoint = mountpoint
            .canonicalize()
            .map_err(|e| format!("mountpoint {}: {e}", mountpoint.display()))?;

        let endpoint = cli.endpoint.clone().or(creds.endpoint.clone());
        if let Some(ep) = &endpoint {
            if !ep.starts_with("http://") && !ep.starts_with("https://") {
                return Err(format!(
                    "endpoint {ep:?} must start with http:// or https://"
                ));
            }
        }
        let region = cli
            .region
            .clone()
            .or(creds.region.clone())
            .unwrap_or_else(|| "us-east-1".to_string());
        let path_style = cli.force_path_style
            || creds.path_style.unwrap_or(false)
            || endpoint.as_deref().is_some_and(needs_path_style);
        let credentials = creds.keys.as_ref().map(credentials::sdk_credentials);
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let max_window = cli
            .max_prefetch
            .unwrap_or(64 << 20)
            .min(cli.cache_size / 2)
            .max(1 << 20);
        let fs = FsConfig {
            prefix: prefix.clone(),
            uid: cli.uid.unwrap_or(euid),
            gid: cli.gid.unwrap_or(egid),
            force_owner: cli.uid.is_some() || cli.gid.is_some(),
            file_mode: cli.file_mode,
            dir_mode: cli.dir_mode,
            umask: cli.umask.unwrap_or(0),
            metadata_ttl: seconds("metadata-ttl", cli.metadata_ttl, 0.0, ONE_YEAR)?,
            read_only: cli.read_only,
            list_stat_limit: cli.list_stat_limit,
            prefetch: PrefetchConfig {
                max_window,
                ..PrefetchConfig::default()
            },
            cache_bytes: cli.cache_size as usize,
            tmp_dir: cli.tmp_dir.clone().unwrap_or_else(std::env::temp_dir),
            max_inflight_parts: cli.max_inflight_parts.max(1),
            tmp_size: 0,
            xattr: !cli.no_xattr,
            direct_io: cli.direct_io,
        };
        if !fs.tmp_dir.is_dir() {
            return Err(format!(
                "staging directory {} does not exist",
                fs.tmp_dir.display()
            ));
        }
        let mut fs = fs;
        fs.tmp_size = match cli.tmp_size {
            Some(n) => n,
            None => free_space(&fs.tmp_dir).map_or(1 << 30, |free| (free / 2).max(1 << 30)),
        };
        let endpoint_label = endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({region})"));
        Ok(MountConfig {
            s3: S3Settings {
                bucket: bucket.clone(),
                endpoint,
                region,
                credentials,
                path_style,
                connect_timeout: seconds("connect-timeout", cli.connect_timeout, 0.1, ONE_DAY)?,
                read_timeout: Duration::from_secs(30),
                max_attempts: cli.retries.max(1),
                op_timeout: seconds("op-timeout", cli.op_timeout, 1.0, ONE_DAY)?,
                checksums: cli.checksums,
            },
            bucket,
            prefix,
            mountpoint,
            fs,
            foreground: cli.foreground,
            daemon_child: cli.daemon_child,
            allow_other: cli.allow_other,
            credential_source: creds.source,
            endpoint_label,
            credential_request,
            state_dir: cli
                .state_dir
                .clone()
                .or_else(crate::upload::journal::default_dir),
            abort_stale_uploads: !cli.keep_stale_uploads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::ProcessEnv;

    #[test]
    fn durations_are_checked() {
        assert_eq!(
            seconds("x", 0.25, 0.0, 10.0),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(seconds("x", 0.0, 1.0, 10.0), Ok(Duration::from_secs(1)));
        for bad in [f64::NAN, f64::INFINITY, -1.0, 11.0, 1e300] {
            let e = seconds("op-timeout", bad, 0.0, 10.0).unwrap_err();
            assert!(e.starts_with("--op-timeout"), "{e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn sources() {
        assert_eq!(parse_source("b").unwrap(), ("b".into(), "".into()));
        assert_eq!(
            parse_source("b:some/pre/").unwrap(),
            ("b".into(), "some/pre".into())
        );
        assert_eq!(parse_source("s3://b/p").unwrap(), ("b".into(), "p".into()));
        assert!(parse_source(":x").is_err());
    }

    #[test]
    fn path_style_hosts() {
        assert!(needs_path_style("http://127.0.0.1:9000"));
        assert!(needs_path_style("http://localhost:9000/"));
        assert!(needs_path_style("http://[::1]:9000"));
        assert!(!needs_path_style("https://s3.example.net"));
    }

    #[test]
    fn mount_options_fold_onto_flags() {
        let mut cli = Cli::parse_from([
            "s3mount",
            "b",
            "/mnt",
            "-o",
            "ro,allow_other,uid=1000,gid=1001,umask=022,endpoint=http://127.0.0.1:1,_netdev,nofail,x-systemd.automount,cache_size=128M,direct_io,checksums",
        ]);
        cli.apply_mount_options().unwrap();
        assert!(cli.read_only && cli.allow_other);
        assert_eq!(
            (cli.uid, cli.gid, cli.umask),
            (Some(1000), Some(1001), Some(0o22))
        );
        assert_eq!(cli.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(cli.cache_size, 128 << 20);
        assert!(cli.direct_io && cli.checksums);
        let mut bad = Cli::parse_from(["s3mount", "b", "/mnt", "-o", "bogus"]);
        assert!(bad.apply_mount_options().unwrap_err().contains("bogus"));
    }

    #[test]
    fn mount_helper_calling_convention() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (args, flags) = helper_args(argv(&[
            "/sbin/mount.s3mount",
            "bkt:pre",
            "/mnt/x",
            "-sn",
            "-o",
            "rw,allow_other",
            "-t",
            "s3mount",
        ]))
        .unwrap();
        assert_eq!(
            args,
            argv(&[
                "s3mount",
                "bkt:pre",
                "/mnt/x",
                "--sloppy",
                "-o",
                "rw,allow_other"
            ])
        );
        assert!(!flags.fake);
        let (_, flags) = helper_args(argv(&["mount.s3mount", "b", "/m", "-f"])).unwrap();
        assert!(flags.fake, "-f is 'fake' for mount helpers");
        let (args, _) = helper_args(argv(&["s3mount", "b", "/m", "-f"])).unwrap();
        assert_eq!(
            args,
            argv(&["s3mount", "b", "/m", "-f"]),
            "s3mount keeps -f as foreground"
        );
        assert!(helper_args(argv(&["mount.s3mount", "b"])).is_err());
        let mut sloppy = Cli::parse_from(["s3mount", "b", "/m", "--sloppy", "-o", "whatever,ro"]);
        sloppy.apply_mount_options().unwrap();
        assert!(sloppy.read_only);
    }

    #[test]
    fn config_for_a_local_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::parse_from([
            "s3mount",
            "bucket:pre/",
            dir.path().to_str().unwrap(),
            "--endpoint",
            "http://127.0.0.1:9000",
            "--no-sign-request",
        ]);
        let c = MountConfig::from_cli(cli, &ProcessEnv).unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bucket", "pre"));
        assert!(c.s3.path_style);
        assert_eq!(c.s3.region, "us-east-1");
        assert!(c.s3.credentials.is_none());
    }
}
