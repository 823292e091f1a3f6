//! Attaching the filesystem to its mountpoint. As root we call mount(2) ourselves, so the mount
//! shows as `fuse.s3mount` (fuser's own direct mount drops the subtype); other users go through
//! fuser and fusermount3.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fuser::{Filesystem, MountOption, Session, SessionACL, SessionUnmounter};

pub struct Options {
    pub fsname: String,
    pub read_only: bool,
    pub allow_other: bool,
    pub threads: usize,
}

/// Undoes the mount on request (a signal); the kernel also ends the session on `umount`.
pub enum Unmounter {
    Fuser(SessionUnmounter),
    Direct(PathBuf),
}

impl Unmounter {
    pub fn unmount(&mut self) -> io::Result<()> {
        match self {
            Unmounter::Fuser(u) => u.unmount(),
            Unmounter::Direct(path) => {
                let c = CString::new(path.as_os_str().as_bytes())?;
                // Lazy: files still open keep the session alive until they are closed.
                // SAFETY: a valid C string.
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(e);
                    }
                }
                Ok(())
            }
        }
    }
}

fn config(opts: &Options, with_mount_options: bool) -> fuser::Config {
    let mut cfg = fuser::Config::default();
    if opts.allow_other {
        cfg.acl = SessionACL::All;
    }
    if with_mount_options {
        let mut m = vec![
            MountOption::FSName(opts.fsname.clone()),
            MountOption::Subtype("s3mount".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        if opts.read_only {
            m.push(MountOption::RO);
        }
        if opts.allow_other {
            // Other users get in: let the kernel enforce the modes we show.
            m.push(MountOption::DefaultPermissions);
        }
        cfg.mount_options = m;
    }
    cfg.n_threads = Some(opts.threads);
    cfg
}

fn mount_direct(mountpoint: &Path, opts: &Options) -> io::Result<OwnedFd> {
    let dev = File::options().read(true).write(true).open("/dev/fuse")?;
    let mode = File::open(mountpoint)?.metadata()?.permissions().mode() & libc::S_IFMT;
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={mode:o},user_id={uid},group_id={gid}",
        dev.as_raw_fd()
    );
    if opts.allow_other {
        data.push_str(",default_permissions,allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if opts.read_only {
        flags |= libc::MS_RDONLY;
    }
    let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target, fstype, data) = (
        c(opts.fsname.as_bytes())?,
        c(mountpoint.as_os_str().as_bytes())?,
        c(b"fuse.s3mount")?,
        c(data.as_bytes())?,
    );
    // SAFETY: valid C strings; the kernel reads them during the call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dev.into())
}

/// Mounts `fs` on `mountpoint` and returns the session (not yet running) and its unmounter.
pub fn mount<FS: Filesystem>(
    fs: FS,
    mountpoint: &Path,
    opts: &Options,
) -> io::Result<(Session<FS>, Unmounter)> {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } == 0 {
        let fd = mount_direct(mountpoint, opts)?;
        let acl = if opts.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        let session = Session::from_fd(fs, fd, acl, config(opts, false)).inspect_err(|_| {
            let _ = Unmounter::Direct(mountpoint.to_path_buf()).unmount();
        })?;
        return Ok((session, Unmounter::Direct(mountpoint.to_path_buf())));
    }
    let mut session = Session::new(fs, mountpoint, &config(opts, true))?;
    let unmounter = Unmounter::Fuser(session.unmount_callable());
    Ok((session, unmounter))
}
